"""Compaction of a day with more small files than the process may hold open."""

from __future__ import annotations

import os
import resource
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from hogflare import compaction
from hogflare.lake import Lake
from hogflare.lake_tables import EVENTS, PERSONS
from hogflare.shipper import Shipper
from tests.conftest import TOKEN, Hogflare, event

DAY = "2024-05-01T10:00:00Z"


async def _small_flushes(hogflare: Hogflare, count: int, stamp: str) -> list[str]:
    """``count`` flushes of one event each, each shipped as its own files; their uuids."""
    assert hogflare.app.store is not None
    uuids = []
    for n in range(count):
        sent = event(f"flush {n} of {stamp}", timestamp=stamp, uuid=str(uuid.uuid4()))
        await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [sent]})
        Shipper(hogflare.settings, store=hogflare.app.store).drain()
        uuids.append(sent["uuid"])
    return uuids


@contextmanager
def _open_files_at_most(headroom: int) -> Iterator[None]:
    """The process may open only ``headroom`` more files than it has open now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1 + headroom, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_day_of_more_small_files_than_may_be_open_at_once_is_rewritten(hogflare: Hogflare) -> None:
    """A quiet server's flushes pile up as thousands of tiny files in a day; the rewrite opens
    them one after another, not all at once, so the process's limit on open files (1,024 by
    default) does not stop it."""
    uuids = await _small_flushes(hogflare, 48, DAY)
    lake = Lake(hogflare.settings.lake_dir)
    assert len(lake.data_files(EVENTS)) == len(lake.data_files(PERSONS)) == 48

    with _open_files_at_most(24):
        for table in (EVENTS, PERSONS):
            assert compaction.compact_due(lake, table, 16, deadline=time.monotonic() + 60) == 48

    assert len(lake.data_files(EVENTS)) == len(lake.data_files(PERSONS)) == 1
    assert sorted(row["uuid"] for row in hogflare.rows()) == sorted(uuids)
    assert sorted(row["source_event_uuid"] for row in hogflare.persons()) == sorted(uuids)
