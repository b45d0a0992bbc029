"""Compaction of a day with more small files than the process may hold open, and of a day it
cannot read, from the upkeep and from `hogflare compact`."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyiceberg.table import DataScan

from hogflare import compaction
from hogflare.lake import Lake
from hogflare.lake_tables import EVENTS, PERSONS
from hogflare.shipper import Shipper
from tests.conftest import TOKEN, Hogflare, event
from tests.helpers.server import HOGFLARE

DAY = "2024-05-01T10:00:00Z"
OTHER_DAY = "2024-05-02T10:00:00Z"


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


async def test_hogflare_compact_reports_a_day_it_cannot_read_and_does_the_others(hogflare: Hogflare) -> None:
    await _small_flushes(hogflare, 3, DAY)
    second = await _small_flushes(hogflare, 3, OTHER_DAY)
    lake = Lake(hogflare.settings.lake_dir)
    damaged = next(path for path in lake.data_files(EVENTS) if "timestamp_day=2024-05-01" in path)
    Path(damaged).write_bytes(b"not parquet any more")

    result = subprocess.run(
        [HOGFLARE, "compact", "--data-dir", str(hogflare.settings.data_dir), "--min-files", "2"],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 1
    assert f"error: {EVENTS} 2024-05-01: cannot read" in result.stderr
    assert "Traceback" not in result.stderr
    # The table's other day was rewritten, and the other table (its snapshots, of today).
    assert f"{EVENTS} 2024-05-02: 3 files rewritten as one" in result.stdout
    assert re.search(rf"{PERSONS} \d{{4}}-\d\d-\d\d: 6 files rewritten as one", result.stdout)
    by_day: dict[str, list[str]] = {}
    for path in lake.data_files(EVENTS):
        by_day.setdefault(path.split("timestamp_day=")[1][:10], []).append(path)
    assert {day: len(paths) for day, paths in by_day.items()} == {"2024-05-01": 3, "2024-05-02": 1}
    # (The damaged file stops queries of the table; the rewritten day is read on its own.)
    assert sorted(pq.read_table(by_day["2024-05-02"][0], columns=["uuid"])["uuid"].to_pylist()) == sorted(second)


async def test_a_plan_of_the_table_that_failed_is_made_again(
    hogflare: Hogflare, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compactor follows the table's newest snapshot; a plan of it that fails (a manifest
    that could not be read just then) is not mistaken for one made."""
    await _small_flushes(hogflare, 2, DAY)
    compactor = compaction.Compactor(Lake(hogflare.settings.lake_dir), EVENTS)
    assert len(compactor.live()) == 2
    await _small_flushes(hogflare, 1, DAY)

    def unreadable(_scan: DataScan) -> None:
        raise OSError("a manifest could not be read")

    with monkeypatch.context() as patched:
        patched.setattr(DataScan, "plan_files", unreadable)
        with pytest.raises(OSError, match="manifest"):
            compactor.live()
    assert len(compactor.live()) == 3
