"""The lake as a user sees it: exactly-once resumption, compaction, and the query views."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gc
import io
import json
import logging
import os
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pyiceberg.io.pyarrow import parquet_file_to_data_file
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table
from pyiceberg.typedef import Record
from structlog.testing import capture_logs

from hogflare import compaction
from hogflare import lake as lake_module
from hogflare import shipper as shipper_module
from hogflare._hogflare import UNMEASURED_COLUMNS, Export, Store
from hogflare.compaction import CompactionConflictError
from hogflare.export_ahead import ExportAhead
from hogflare.iceberg import SyncedSqlCatalog
from hogflare.lake import Lake
from hogflare.lake_tables import EVENTS, PERSONS
from hogflare.query import run
from hogflare.shipper import Shipper
from hogflare.store import lake_position, local_path
from tests.conftest import TOKEN, Hogflare, event, make_settings, running
from tests.helpers.server import HOGFLARE, query

DAYS = ["2024-05-01T10:00:00Z", "2024-05-02T10:00:00Z"]
LATER = "2024-05-03T10:00:00Z"


async def _three_flushes(hogflare: Hogflare) -> None:
    for flush in range(3):
        batch = [event(f"e{flush}-{day}", timestamp=stamp) for day, stamp in enumerate(DAYS)]
        await hogflare.post("/batch/", {"api_key": TOKEN, "batch": batch})
        hogflare.rows()  # ships this flush as its own files


def _files_per_day(lake: Lake) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in lake.data_files(EVENTS):
        day = path.split("timestamp_day=")[1][:10]
        counts[day] = counts.get(day, 0) + 1
    return counts


async def test_compaction_rewrites_small_files_and_keeps_every_row_once(hogflare: Hogflare) -> None:
    await _three_flushes(hogflare)
    lake = Lake(hogflare.settings.lake_dir)
    assert _files_per_day(lake) == {"2024-05-01": 3, "2024-05-02": 3}
    before = sorted(row["uuid"] for row in hogflare.rows())

    result = subprocess.run(
        [HOGFLARE, "compact", "--data-dir", str(hogflare.settings.data_dir), "--min-files", "2"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "3 files rewritten as one" in result.stdout
    assert _files_per_day(lake) == {"2024-05-01": 1, "2024-05-02": 1}
    again = subprocess.run(
        [HOGFLARE, "compact", "--data-dir", str(hogflare.settings.data_dir), "--min-files", "2"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert again.stdout == "nothing to compact: no day has 2 files under 64 MB\n"
    # A day needs two files at least to become one, and a file some size to be small.
    for option, value in [("--min-files", "1"), ("--small-mb", "0")]:
        refused = subprocess.run(
            [HOGFLARE, "compact", "--data-dir", str(hogflare.settings.data_dir), option, value],
            capture_output=True,
            text=True,
        )
        assert (refused.returncode, option in refused.stderr) == (2, True), refused.stderr
    assert sorted(row["uuid"] for row in hogflare.rows()) == before

    # The compaction kept the lake's outbox position: new rows still land once, old ones not again.
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("after compaction")]})
    rows = hogflare.rows()
    assert len(rows) == len(before) + 1
    assert len({row["uuid"] for row in rows}) == len(rows)


async def test_compaction_takes_files_pyiceberg_wrote(hogflare: Hogflare) -> None:
    """A lake compacted by an earlier version holds files pyiceberg wrote (other Arrow types,
    another writer): they are rewritten together with the shipper's."""
    await _three_flushes(hogflare)
    lake = Lake(hogflare.settings.lake_dir)
    table = lake.refresh(EVENTS)
    day = table.scan(row_filter="timestamp < '2024-05-02T00:00:00+00:00'").to_arrow()
    uuids = pa.array([str(uuid.uuid4()) for _ in range(day.num_rows)], day.schema.field("uuid").type)
    copies = day.set_column(day.schema.get_field_index("uuid"), day.schema.field("uuid"), uuids)
    table.append(copies)
    assert _files_per_day(lake) == {"2024-05-01": 4, "2024-05-02": 3}
    before = sorted(row["uuid"] for row in hogflare.rows())

    assert compaction.Compactor(lake, EVENTS).compact_day(dt.date(2024, 5, 1)) == (4, 1)
    assert _files_per_day(lake) == {"2024-05-01": 1, "2024-05-02": 3}
    assert sorted(row["uuid"] for row in hogflare.rows()) == before


async def test_compaction_outlasts_commits_elsewhere_and_says_when_it_gives_up(
    hogflare: Hogflare, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another commit to the table between a rewrite and its own commit (the shipper's, say)
    fails that commit; it tries again on the new snapshot, and when it loses every time it gives
    up with the table as it was and its file gone."""
    await _three_flushes(hogflare)
    before = {row["uuid"] for row in hogflare.rows()}
    # Rows of another day, each its own flush of the shipper's, committed while the rewrites run.
    for n in range(3 + compaction.COMPACT_ATTEMPTS):
        await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event(f"meanwhile {n}", timestamp=LATER)]})
    shipper = Shipper(make_settings(hogflare.settings.data_dir, flush_rows=1), store=hogflare.app.store)
    lake = Lake(hogflare.settings.lake_dir)
    describe = parquet_file_to_data_file
    commits_elsewhere = 3

    def described_then_overtaken(*args: Any, **kwargs: Any) -> Any:
        nonlocal commits_elsewhere
        described = describe(*args, **kwargs)
        if commits_elsewhere:
            commits_elsewhere -= 1
            assert shipper.ship_lake()
        return described

    monkeypatch.setattr(compaction, "parquet_file_to_data_file", described_then_overtaken)
    assert compaction.Compactor(lake, EVENTS).compact_day(dt.date(2024, 5, 1)) == (3, 1)
    assert commits_elsewhere == 0
    assert _files_per_day(lake) == {"2024-05-01": 1, "2024-05-02": 3, "2024-05-03": 3}

    commits_elsewhere = compaction.COMPACT_ATTEMPTS
    with pytest.raises(CompactionConflictError, match="try again"):
        compaction.Compactor(lake, EVENTS).compact_day(dt.date(2024, 5, 2))
    assert _files_per_day(lake) == {"2024-05-01": 1, "2024-05-02": 3, "2024-05-03": 13}
    day = lake.data_dir(EVENTS) / "timestamp_day=2024-05-02"
    assert not [path.name for path in day.iterdir() if "compacted" in path.name]
    rows = [row["uuid"] for row in hogflare.rows()]
    assert len(rows) == len(set(rows)) == len(before) + 13
    assert before < set(rows)


async def test_the_shipper_rewrites_small_files_as_they_gather(tmp_path: Path) -> None:
    """With ``HOGFLARE_COMPACT_FILES``, the shipper's upkeep rewrites a day's files of about one
    size once that many have gathered, in both tables; the rows stay, each once, and the lake's
    position with them."""
    async with running(make_settings(tmp_path / "data", compact_files=3)) as hogflare:
        await _three_flushes(hogflare)
        events, persons = hogflare.rows(), hogflare.persons()
        lake = Lake(hogflare.settings.lake_dir)
        assert _files_per_day(lake) == {"2024-05-01": 3, "2024-05-02": 3}
        assert len(lake.data_files(PERSONS)) == 3

        # Nothing is started once the upkeep's time is up, or the shipper is stopping.
        stopping = threading.Event()
        stopping.set()
        assert compaction.compact_due(lake, EVENTS, 3, deadline=time.monotonic() - 1) == 0
        assert compaction.compact_due(lake, EVENTS, 3, deadline=time.monotonic() + 60, stop=stopping) == 0
        assert _files_per_day(lake) == {"2024-05-01": 3, "2024-05-02": 3}

        shipper = Shipper(hogflare.settings, store=hogflare.app.store)
        counted = await _rewritten(hogflare)
        shipper.maintain()
        assert _files_per_day(lake) == {"2024-05-01": 1, "2024-05-02": 1}
        assert len(lake.data_files(PERSONS)) == 1
        now = await _rewritten(hogflare)
        assert {table: now[table] - counted.get(table, 0) for table in now} == {EVENTS: 6, PERSONS: 3}
        assert hogflare.rows() == events
        assert hogflare.persons() == persons
        # Nothing more is due until as many files gather again.
        shipper.maintain()
        assert _files_per_day(lake) == {"2024-05-01": 1, "2024-05-02": 1}

        await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("after", timestamp=DAYS[0])]})
        rows = hogflare.rows()
        assert len(rows) == len(events) + 1
        assert len({row["uuid"] for row in rows}) == len(rows)


async def test_large_flushes_are_joined_as_they_are(tmp_path: Path) -> None:
    """Files whose row groups are already large (a busy server's flushes) are joined without
    being decoded: the rewrite keeps their row groups, and readers see the same rows."""
    async with running(make_settings(tmp_path / "data", compact_files=3)) as hogflare:
        for flush in range(3):
            batch = [event(f"e{flush}-{n}", distinct_id=f"user-{n % 50}", timestamp=DAYS[0]) for n in range(8_200)]
            await hogflare.post("/batch/", {"api_key": TOKEN, "batch": batch})
            hogflare.rows("false")  # ships this flush as its own files
        events, persons = hogflare.rows(), hogflare.persons()
        lake = Lake(hogflare.settings.lake_dir)
        assert len(lake.data_files(EVENTS)) == len(lake.data_files(PERSONS)) == 3

        Shipper(hogflare.settings, store=hogflare.app.store).maintain()
        for table in (EVENTS, PERSONS):
            [joined] = lake.data_files(table)
            metadata = pq.ParquetFile(joined).metadata
            assert [metadata.row_group(index).num_rows for index in range(metadata.num_row_groups)] == [8_200] * 3
        assert hogflare.rows() == events
        assert hogflare.persons() == persons


async def test_a_group_that_cannot_be_rewritten_leaves_the_others_to_be(hogflare: Hogflare) -> None:
    await _three_flushes(hogflare)
    lake = Lake(hogflare.settings.lake_dir)
    lost = next(path for path in lake.data_files(EVENTS) if "timestamp_day=2024-05-01" in path)
    Path(lost).write_bytes(b"not parquet any more")

    with capture_logs() as logged:
        assert compaction.compact_due(lake, EVENTS, 3, deadline=time.monotonic() + 60) == 3
    assert _files_per_day(lake) == {"2024-05-01": 3, "2024-05-02": 1}
    [failure] = [line for line in logged if line["event"].startswith("cannot rewrite small files")]
    assert (failure["log_level"], failure["day"], failure["files"]) == ("error", "2024-05-01", 3)
    day = lake.data_dir(EVENTS) / "timestamp_day=2024-05-01"
    assert not [path.name for path in day.iterdir() if "compacted" in path.name]


async def _rewritten(hogflare: Hogflare) -> dict[str, float]:
    metrics = await hogflare.client.get("/metrics")
    return {
        sample.labels["table"]: sample.value
        for family in text_string_to_metric_families(metrics.text)
        for sample in family.samples
        if sample.name == "hogflare_lake_files_rewritten_total"
    }


def test_files_of_about_one_size_are_rewritten_together_once_enough_gathered() -> None:
    def files(*sizes: int, day: int | None = 0) -> list[DataFile]:
        return [
            DataFile.from_args(
                file_path=f"/lake/{index:020}-{size}.parquet",
                file_size_in_bytes=size,
                record_count=1,
                partition=Record(day),
            )
            for index, size in enumerate(sizes)
        ]

    def sizes(groups: list[list[DataFile]]) -> list[list[int]]:
        return [[file.file_size_in_bytes for file in group] for group in groups]

    kb = 1 << 10
    # Three of one size class are due, two of another are not yet; large files never are.
    gathered = files(10 * kb, 12 * kb, 100 * kb, 11 * kb, 900 * kb, 1_000 * kb, 65 << 20, 70 << 20)
    assert sizes(compaction.due_rewrites(gathered, min_files=3)) == [[10 * kb, 12 * kb, 11 * kb]]
    assert compaction.due_rewrites(gathered, min_files=4) == []
    # Each day on its own; rows without a day are left as they are.
    assert compaction.due_rewrites(files(10 * kb, 11 * kb) + files(12 * kb, day=1), min_files=3) == []
    assert compaction.due_rewrites(files(10 * kb, 11 * kb, 12 * kb, day=None), min_files=3) == []
    # A rewrite takes at most REWRITE_MAX_BYTES; a group that would be one file alone is left.
    many = files(*[60 << 20] * 9)
    assert sizes(compaction.rewrites(many)) == [[60 << 20] * 4, [60 << 20] * 4]


async def test_files_compaction_replaced_are_deleted_once_no_reader_can_want_them(hogflare: Hogflare) -> None:
    await _three_flushes(hogflare)
    lake = Lake(hogflare.settings.lake_dir)
    before = {name: set(lake.data_files(name)) for name in (EVENTS, PERSONS)}
    rows = sorted(row["uuid"] for row in hogflare.rows())
    subprocess.run(
        [HOGFLARE, "compact", "--data-dir", str(hogflare.settings.data_dir), "--min-files", "2"],
        capture_output=True,
        check=True,
    )
    after = {name: set(lake.data_files(name)) for name in (EVENTS, PERSONS)}
    replaced = set().union(*(before[name] - after[name] for name in before))
    assert len(before[EVENTS] - after[EVENTS]) == 6

    # The snapshots that showed the small files expire (the compaction's own once a later flush
    # has followed it); a query that listed them a moment ago can still read them until the grace
    # period is over.
    for name in (EVENTS, PERSONS):
        lake.trim_history(name, keep=1)
    assert lake.delete_unreferenced(grace_secs=0) == 0
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("later", timestamp=LATER)]})
    rows = sorted(row["uuid"] for row in hogflare.rows())
    after = {name: set(lake.data_files(name)) for name in (EVENTS, PERSONS)}
    for name in (EVENTS, PERSONS):
        lake.trim_history(name, keep=1)
    assert all(Path(path).exists() for path in replaced)
    assert lake.delete_unreferenced() == 0

    assert lake.delete_unreferenced(grace_secs=0) == len(replaced)
    assert not any(Path(path).exists() for path in replaced)
    for name in (EVENTS, PERSONS):
        on_disk = {str(path) for path in lake.data_dir(name).rglob("*.parquet")}
        assert on_disk == after[name]
    assert sorted(row["uuid"] for row in hogflare.rows()) == rows
    assert lake.delete_unreferenced(grace_secs=0) == 0

    # Plain appends leave nothing to delete as their history is trimmed.
    await _three_flushes(hogflare)
    for name in (EVENTS, PERSONS):
        lake.trim_history(name, keep=1)
    assert lake.delete_unreferenced(grace_secs=0) == 0
    assert len(hogflare.rows()) == len(rows) * 2 - 1


async def test_a_full_disk_or_a_list_cut_short_keeps_no_due_file_from_being_deleted(
    hogflare: Hogflare, monkeypatch: pytest.MonkeyPatch
) -> None:
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("first")]})
    assert [row["event"] for row in hogflare.rows()] == ["first"]
    lake = Lake(hogflare.settings.lake_dir)
    due = lake.data_dir(EVENTS) / "replaced-an-hour-ago.parquet"
    due.write_bytes(b"PAR1")
    an_hour_ago = int(time.time() - 3600)
    # The list's last line was being appended when the power went.
    (lake.root / lake_module.UNREFERENCED_LIST).write_text(f"{an_hour_ago} {due}\n\0\0\0\0\n", encoding="utf-8")

    def disk_full(self: Lake, name: str, keep: int | None = None) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Lake, "trim_history", disk_full)
    assert hogflare.app.store is not None
    Shipper(hogflare.settings, store=hogflare.app.store).maintain()
    assert not due.exists()
    assert [row["event"] for row in hogflare.rows()] == ["first"]


async def test_files_a_crash_left_before_their_commit_are_deleted_once_old_enough(
    hogflare: Hogflare, monkeypatch: pytest.MonkeyPatch
) -> None:
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("first"), event("second")]})
    assert hogflare.app.store is not None
    shipper = Shipper(hogflare.settings, store=hogflare.app.store)
    add_files = Lake.add_files

    def fails_once(self: Lake, name: str, paths: list[str], outbox_seq: int, store_id: str | None = None) -> None:
        monkeypatch.setattr(Lake, "add_files", add_files)
        raise OSError("disk full")

    monkeypatch.setattr(Lake, "add_files", fails_once)
    # The process dies before it can delete the files it wrote.
    monkeypatch.setattr(Shipper, "_forget_unless_committed", lambda *_: None)
    with pytest.raises(OSError, match="disk full"):
        shipper.ship_lake()
    rows = hogflare.rows()  # shipped again, in new files
    assert sorted(row["event"] for row in rows) == ["first", "second"]

    lake = Lake(hogflare.settings.lake_dir)
    live = {name: set(lake.data_files(name)) for name in (EVENTS, PERSONS)}
    on_disk = {name: {str(path) for path in lake.data_dir(name).rglob("*.parquet")} for name in live}
    left = set().union(*(on_disk[name] - live[name] for name in live))
    assert left
    # Recent files may be a compaction's, about to be committed: they stay.
    monkeypatch.setattr(shipper_module, "_SWEEP_SECS", 0.0)  # every pass looks
    shipper.maintain()
    assert all(Path(path).exists() for path in left)

    # A later pass of the same shipper looks again, once they are old enough, and also deletes
    # what a crash left half-written under a file's temporary name.
    an_hour_ago = time.time() - 3600
    half_written = lake.data_dir(EVENTS) / "part-0.parquet.tmp"
    half_written.write_bytes(b"PAR1")
    for path in {*set().union(*on_disk.values()), str(half_written)}:
        os.utime(path, (an_hour_ago, an_hour_ago))
    shipper.maintain()
    for name, files in live.items():
        assert {str(path) for path in lake.data_dir(name).rglob("*.parquet")} == files
    assert not half_written.exists()
    assert sorted(row["event"] for row in hogflare.rows()) == ["first", "second"]

    # When the files the table names are not where it says, nothing is told apart or deleted.
    stray = lake.data_dir(EVENTS) / "stray.parquet"
    stray.write_bytes(b"")
    os.utime(stray, (an_hour_ago, an_hour_ago))
    moved = Path(next(iter(live[EVENTS])))
    moved.rename(moved.with_suffix(".moved"))
    assert lake.delete_uncommitted(EVENTS, grace_secs=0) == 0
    assert stray.exists()


async def test_metadata_of_a_commit_a_crash_cut_short_is_deleted_once_old_enough(
    hogflare: Hogflare, monkeypatch: pytest.MonkeyPatch
) -> None:
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("first")]})
    hogflare.rows()
    lake = Lake(hogflare.settings.lake_dir)
    folder = Path(local_path(lake.table(EVENTS).location())) / "metadata"
    before = set(folder.iterdir())
    # The process is killed in the catalog's commit, after the manifests and the manifest list
    # are written (no cleanup runs).
    commit_table = SyncedSqlCatalog.commit_table

    class Killed(BaseException):
        pass

    def dies(self: SyncedSqlCatalog, table: Table, requirements: Any, updates: Any) -> Any:
        if EVENTS not in table.name():
            return commit_table(self, table, requirements, updates)
        monkeypatch.setattr(SyncedSqlCatalog, "commit_table", commit_table)
        raise Killed

    monkeypatch.setattr(SyncedSqlCatalog, "commit_table", dies)
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("second")]})
    with pytest.raises(Killed):
        Shipper(hogflare.settings, store=hogflare.app.store).ship_lake()
    left = set(folder.iterdir()) - before
    assert len(left) >= 2
    # A crash between writing a table version and the catalog's update leaves it unnamed too.
    unnamed = folder / f"99999-{uuid.uuid4()}.metadata.json"
    unnamed.write_text("{}")
    hogflare.rows()  # shipped again
    live = set(folder.iterdir()) - left - {unnamed}

    lake.delete_uncommitted(EVENTS)  # recent files may be a commit in progress: they stay
    assert left | {unnamed} <= set(folder.iterdir())
    an_hour_ago = time.time() - 3600
    for path in folder.iterdir():
        os.utime(path, (an_hour_ago, an_hour_ago))
    lake.delete_uncommitted(EVENTS)
    assert set(folder.iterdir()) == live
    assert sorted(row["event"] for row in hogflare.rows()) == ["first", "second"]
    # As a user reads the lake, through DuckDB.
    rows = query(hogflare.settings.data_dir, "SELECT event FROM events ORDER BY event")
    assert [row["event"] for row in rows] == ["first", "second"]
    # Opening the lake, as each query and each shipper does, writes nothing.
    assert set(folder.iterdir()) == live


def _commit_by_hand(store: Store, lake: Lake, tables: tuple[str, ...]) -> None:
    """Export the whole outbox and commit it to ``tables`` only, as a shipper that died before
    it could commit the other table (or tell the store) would have."""
    export = store.export(
        0,
        events_upto=0,
        persons_upto=0,
        max_rows=100,
        max_bytes=1 << 30,
        events_dir=str(lake.data_dir(EVENTS)),
        persons_dir=str(lake.data_dir(PERSONS)),
    )
    for table in tables:
        lake.add_files(
            table, [path for name, _, path, _, _ in export.files if name == table], export.last_seq, store.id
        )


async def test_the_lake_not_the_store_decides_where_shipping_resumes(hogflare: Hogflare) -> None:
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("one"), event("two")]})
    store = hogflare.app.store
    assert store is not None
    # Ship by hand and "crash" right after the lake's commit: the store never hears of it, so
    # its cursor stays at 0 and the rows stay in the outbox.
    _commit_by_hand(store, Lake(hogflare.settings.lake_dir), (EVENTS, PERSONS))
    assert store.cursor("lake") is None
    # Two event rows, and the person snapshot each made.
    assert store.outbox_state()[1] == 4
    # The next shipper reads the lake's own record and does not write them again.
    Shipper(hogflare.settings, store=store).drain()
    assert store.outbox_state()[1] == 0
    assert sorted(row["event"] for row in hogflare.rows()) == ["one", "two"]


async def test_after_a_crash_between_the_tables_commits_smaller_chunks_write_no_row_twice(
    tmp_path: Path,
) -> None:
    """The persons table committed a chunk the events table did not (the process died between
    the two), and the shipper comes back with smaller chunks: each table goes on from its own
    position, and the one ahead is never taken back to the other's."""
    settings = make_settings(tmp_path / "data")
    async with running(settings) as hogflare:
        names = [f"e{index}" for index in range(6)]
        await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event(name) for name in names]})
        store = hogflare.app.store
        assert store is not None
        _commit_by_hand(store, Lake(settings.lake_dir), (PERSONS,))
        # Four outbox positions a chunk: two events and their snapshots.
        Shipper(make_settings(tmp_path / "data", flush_rows=4), store=store).drain()
        assert sorted(row["event"] for row in hogflare.rows()) == names
        assert len(hogflare.persons()) == len(names)


async def test_a_store_replaced_under_the_lake_ships_every_row_of_its_own(tmp_path: Path) -> None:
    """A store moved aside (as an operator does with one of another format) while the lake
    stays, and later put back: each outbox counts from its own start, and no position the lake
    recorded for another store may pass for its own."""
    settings = make_settings(tmp_path / "data")
    store_dir = settings.store_dir

    async def send(*names: str) -> list[str]:
        async with running(settings) as hogflare:
            for name in names:
                await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event(name)]})
            shipped = sorted(row["event"] for row in hogflare.rows())
        del hogflare
        gc.collect()  # the app's store is closed before the next one opens, as across processes
        return shipped

    assert await send("a0", "a1", "a2", "a3") == ["a0", "a1", "a2", "a3"]
    store_dir.rename(tmp_path / "first-store")
    assert await send("b0", "b1", "b2", "b3", "b4") == ["a0", "a1", "a2", "a3", "b0", "b1", "b2", "b3", "b4"]
    store_dir.rename(tmp_path / "second-store")
    (tmp_path / "first-store").rename(store_dir)
    rows = await send("c0")
    assert rows == ["a0", "a1", "a2", "a3", "b0", "b1", "b2", "b3", "b4", "c0"]


async def test_snapshot_history_stays_short_and_leaves_no_metadata_behind(
    hogflare: Hogflare, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each commit costs in proportion to the history; it is cut back as it grows.
    monkeypatch.setattr(lake_module, "HISTORY_MAX", 4)
    monkeypatch.setattr(lake_module, "HISTORY_KEEP", 2)
    for flush in range(9):
        await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event(f"e{flush}")]})
        hogflare.rows()  # one commit per table
    lake = Lake(hogflare.settings.lake_dir)
    for name in (EVENTS, PERSONS):
        table = lake.refresh(name)
        snapshots = table.metadata.snapshots
        assert 2 <= len(snapshots) < 4
        # The manifest lists and manifests of expired snapshots are gone; the live ones are all there.
        referenced = {local_path(snapshot.manifest_list) for snapshot in snapshots}
        referenced |= {local_path(m.manifest_path) for snapshot in snapshots for m in snapshot.manifests(table.io)}
        on_disk = {str(path) for path in (Path(local_path(table.location())) / "metadata").glob("*.avro")}
        assert on_disk == referenced
    assert sorted(row["event"] for row in hogflare.rows()) == [f"e{flush}" for flush in range(9)]
    assert lake.outbox_seq(EVENTS) == lake.outbox_seq(PERSONS) == 18


async def test_json_columns_are_written_without_statistics_and_the_tables_expect_none(
    hogflare: Hogflare, caplog: pytest.LogCaptureFixture
) -> None:
    batch = [event(name, properties={"$set": {"plan": "pro"}}) for name in ("one", "two", "three")]
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": batch})
    with caplog.at_level(logging.WARNING, logger="pyiceberg"):
        assert sorted(row["event"] for row in hogflare.rows()) == ["one", "three", "two"]
    assert not [record for record in caplog.records if "statistics" in record.getMessage()]
    lake = Lake(hogflare.settings.lake_dir)
    # The JSON made from a person recurs on each of its rows and is stored once per file; an
    # event's own JSON never recurs.
    with_dictionary = {
        EVENTS: {"person_properties"},
        PERSONS: {"properties", "properties_set_once", "merged_properties"},
    }
    for name in (EVENTS, PERSONS):
        (path,) = lake.data_files(name)
        chunks = pq.ParquetFile(path).metadata.row_group(0)
        by_column = {chunks.column(i).path_in_schema: chunks.column(i) for i in range(chunks.num_columns)}
        for column in set(UNMEASURED_COLUMNS) & set(by_column):
            assert not by_column[column].is_stats_set, column
            assert by_column[column].has_dictionary_page == (column in with_dictionary[name]), column
        assert by_column["uuid"].is_stats_set
        properties = lake.table(name).properties
        assert all(properties[f"write.metadata.metrics.column.{column}"] == "none" for column in UNMEASURED_COLUMNS)


async def test_a_table_made_before_the_metrics_settings_gets_them(hogflare: Hogflare) -> None:
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("one")]})
    hogflare.rows()
    lake = Lake(hogflare.settings.lake_dir)
    with lake.table(EVENTS).transaction() as transaction:
        transaction.remove_properties(*(f"write.metadata.metrics.column.{column}" for column in UNMEASURED_COLUMNS))
    assert "write.metadata.metrics.column.properties" not in lake.refresh(EVENTS).properties
    reopened = Lake(hogflare.settings.lake_dir).table(EVENTS)
    assert reopened.properties["write.metadata.metrics.column.properties"] == "none"
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("two")]})
    assert [row["event"] for row in hogflare.rows()] == ["one", "two"]


async def test_query_on_an_empty_lake_has_the_events_view(hogflare: Hogflare) -> None:
    assert hogflare.rows() == []
    result = subprocess.run(
        [HOGFLARE, "query", "--data-dir", str(hogflare.settings.data_dir), "--format", "json", "describe events"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"column_name":"properties"' in result.stdout.replace(" ", "")


@pytest.mark.parametrize("command", [["query", "select 1"], ["compact"]])
def test_lake_commands_refuse_a_data_directory_that_is_not_there(tmp_path: Path, command: list[str]) -> None:
    """A mistyped path must not answer as an empty lake would, nor leave directories behind."""
    missing = tmp_path / "typo"
    result = subprocess.run(
        [HOGFLARE, command[0], "--data-dir", str(missing), *command[1:]], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stderr) == (2, f"error: no data directory at {missing}\n")
    assert not missing.exists()
    # A directory that is there but holds no hogflare data (a path one level off) is left as it is.
    other = tmp_path / "other"
    other.mkdir()
    result = subprocess.run(
        [HOGFLARE, command[0], "--data-dir", str(other), *command[1:]], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stderr) == (2, f"error: {other} holds no hogflare data (no lake, no store)\n")
    assert list(other.iterdir()) == []


async def test_query_says_what_it_cannot_read(hogflare: Hogflare) -> None:
    data_dir = str(hogflare.settings.data_dir)
    blank = subprocess.run([HOGFLARE, "query", "--data-dir", data_dir, " "], capture_output=True, text=True)
    assert (blank.returncode, blank.stderr) == (2, "error: no SQL given\n")
    (hogflare.settings.lake_dir).mkdir(parents=True, exist_ok=True)
    (hogflare.settings.lake_dir / "catalog.db").write_bytes(b"not a database" * 100)
    broken = subprocess.run([HOGFLARE, "query", "--data-dir", data_dir, "select 1"], capture_output=True, text=True)
    assert broken.returncode == 1
    assert broken.stderr.startswith(f"error: cannot read the lake in {hogflare.settings.lake_dir}: ")
    assert "Traceback" not in broken.stderr


async def test_query_writes_a_result_of_many_batches_whole(hogflare: Hogflare) -> None:
    """JSON and CSV are written as DuckDB produces them, a batch at a time: every row is there once."""
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("one")]})
    hogflare.rows()
    data_dir = str(hogflare.settings.data_dir)
    sql = "select range as n, 'r' || range as name from range(25001) union all select 0, e.event from events e"

    def run(fmt: str) -> str:
        args = [HOGFLARE, "query", "--data-dir", data_dir, "--format", fmt, sql]
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout

    rows = json.loads(run("json"))
    assert len(rows) == 25_002
    assert sorted(row["n"] for row in rows if row["name"] != "one") == list(range(25_001))
    assert {"n": 0, "name": "one"} in rows
    lines = list(csv.reader(io.StringIO(run("csv"))))
    assert lines[0] == ["n", "name"]
    assert len(lines) == 25_003
    assert ["0", "one"] in lines
    # No rows: still one JSON array and a CSV header.
    empty = "select event, distinct_id from events where false"
    args = [HOGFLARE, "query", "--data-dir", data_dir, "--format"]
    assert subprocess.run([*args, "json", empty], capture_output=True, text=True, check=True).stdout == "[]\n"
    assert subprocess.run([*args, "csv", empty], capture_output=True, text=True, check=True).stdout.splitlines() == [
        "event,distinct_id"
    ]


@pytest.mark.parametrize("fmt", ["json", "csv", "table"])
async def test_query_says_what_failed_while_producing_rows(hogflare: Hogflare, fmt: str) -> None:
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("one")]})
    hogflare.rows()
    # The cast fails on one row far into the result, after DuckDB has started producing it.
    sql = "select (case when range = 40000 then 'x' else range::varchar end)::int as n from range(50000)"
    args = [HOGFLARE, "query", "--data-dir", str(hogflare.settings.data_dir), "--format", fmt, sql]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("error: Conversion Error: Could not convert string 'x'")
    assert "Traceback" not in result.stderr


async def test_query_stops_quietly_when_its_reader_does(hogflare: Hogflare) -> None:
    """``hogflare query ... | head``: the pipe closing is not an error to report."""
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("one")]})
    hogflare.rows()
    sql = "select range as n from range(2000000)"
    args = [HOGFLARE, "query", "--data-dir", str(hogflare.settings.data_dir), "--format", "csv", sql]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        assert process.stdout.readline() == b"n\r\n"
        process.stdout.close()
        stderr = process.stderr.read()
        assert process.wait(timeout=60) == 1
    assert stderr == b""


async def test_query_reads_what_is_left_of_a_damaged_lake_and_says_what_is_missing(hogflare: Hogflare) -> None:
    personless = {"$process_person_profile": False}
    for name in ("kept", "lost"):
        batch = [event(name, properties=personless)]
        assert (await hogflare.post("/batch/", {"api_key": TOKEN, "batch": batch})).status_code == 200
        hogflare.rows()
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("person", "someone")]})
    hogflare.rows()
    lake = Lake(hogflare.settings.lake_dir)
    [lost] = [path for path in lake.data_files(EVENTS) if "lost" in pq.read_table(path).column("event").to_pylist()]
    Path(lost).unlink()

    def query(sql: str) -> subprocess.CompletedProcess[str]:
        args = [HOGFLARE, "query", "--data-dir", str(hogflare.settings.data_dir), "--format", "json", sql]
        return subprocess.run(args, capture_output=True, text=True)

    events = query("select event from events order by event")
    assert events.returncode == 0, events.stderr
    assert json.loads(events.stdout) == [{"event": "kept"}, {"event": "person"}]
    assert events.stderr == (f"warning: 1 data file(s) of {EVENTS} are missing ({lost}); the query reads the rest\n")
    persons = query("select canonical_distinct_id from persons")
    assert json.loads(persons.stdout) == [{"canonical_distinct_id": "someone"}]
    # In process, a reader is told rather than given part of the lake unawares.
    with pytest.raises(FileNotFoundError, match="1 data file"):
        run(lake, "select 1")


def test_a_transaction_works_out_its_metadata_once_per_change(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    table = lake.table(EVENTS)
    with table.transaction() as transaction:
        before = transaction.table_metadata
        assert transaction.table_metadata is before
        transaction.set_properties({"hogflare.test": "1"})
        assert transaction.table_metadata.properties["hogflare.test"] == "1"
        assert "hogflare.test" not in before.properties
    assert lake.refresh(EVENTS).properties["hogflare.test"] == "1"


@pytest.mark.parametrize("writers", [1, 2])
async def test_a_large_flush_is_written_by_several_writers_and_every_row_lands_once(
    tmp_path: Path, writers: int
) -> None:
    settings = make_settings(tmp_path / "data", export_writers=writers)
    personless = {"$process_person_profile": False}
    async with running(settings) as hogflare:
        # 24,000 personless events of one day; 2,000 of the next with a person, and their snapshots.
        for first in range(0, 24_000, 2_000):
            batch = [
                event(f"e{n}", f"anon-{n}", timestamp=DAYS[0], properties=personless)
                for n in range(first, first + 2_000)
            ]
            assert (await hogflare.post("/batch/", {"api_key": TOKEN, "batch": batch})).status_code == 200
        batch = [event("p", f"user-{n % 100}", timestamp=DAYS[1]) for n in range(2_000)]
        assert (await hogflare.post("/batch/", {"api_key": TOKEN, "batch": batch})).status_code == 200
        rows = hogflare.rows()
        lake = Lake(settings.lake_dir)
        assert len(rows) == 26_000 == len({row["uuid"] for row in rows})
        assert sum(row["event"] == "p" for row in rows) == 2_000
        assert len(hogflare.persons()) == 2_000
        # One flush: the large day is cut into one file per writer; the small day and the person
        # snapshots are not worth cutting.
        assert _files_per_day(lake) == {DAYS[0][:10]: writers, DAYS[1][:10]: 1}
        assert len(lake.data_files(PERSONS)) == 1
        # Every file is whole and the lake counts each row once.
        assert sum(pq.read_metadata(local_path(path)).num_rows for path in lake.data_files(EVENTS)) == 26_000


def _files_on_disk(lake: Lake) -> set[str]:
    return {str(path) for name in (EVENTS, PERSONS) for path in lake.data_dir(name).rglob("*.parquet")}


def _live_files(lake: Lake) -> set[str]:
    return {local_path(path) for name in (EVENTS, PERSONS) for path in lake.data_files(name)}


@contextlib.asynccontextmanager
async def _backlog(tmp_path: Path) -> AsyncIterator[tuple[Hogflare, Shipper]]:
    """400 events of 7 users waiting in the outbox (800 rows with their person snapshots), shipped
    100 rows a chunk."""
    async with running(make_settings(tmp_path / "data", flush_rows=100)) as hogflare:
        batch = [event(f"e{n}", f"user-{n % 7}") for n in range(400)]
        assert (await hogflare.post("/batch/", {"api_key": TOKEN, "batch": batch})).status_code == 200
        assert hogflare.app.store is not None
        yield hogflare, Shipper(hogflare.settings, store=hogflare.app.store)


def _record_starts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The outbox positions after which a chunk was exported ahead."""
    started: list[int] = []
    start = ExportAhead.start

    def recorded(self: ExportAhead, after: int, export: Callable[[], Export]) -> None:
        started.append(after)
        start(self, after, export)

    monkeypatch.setattr(ExportAhead, "start", recorded)
    return started


async def test_a_backlog_is_exported_a_chunk_ahead_of_the_commits_and_lands_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _backlog(tmp_path) as (hogflare, shipper):
        lake = Lake(hogflare.settings.lake_dir)
        started = _record_starts(monkeypatch)
        # 800 outbox rows (events and their person snapshots), 100 per chunk: every chunk but the
        # first is exported while the one before it commits.
        assert shipper.drain() == 800
        assert started == [100, 200, 300, 400, 500, 600, 700]
        assert lake.outbox_seq(EVENTS) == lake.outbox_seq(PERSONS) == 800
        # The server's startup reads the same position from the catalog without pyiceberg.
        assert lake_position(hogflare.settings.lake_dir, shipper.store.id) == 800
        assert lake_position(hogflare.settings.lake_dir, str(uuid.uuid4())) == 0
        rows = hogflare.rows()
        assert sorted(row["event"] for row in rows) == sorted(f"e{n}" for n in range(400))
        assert len(hogflare.persons()) == 400
        # No file was written that the lake does not reference.
        assert _files_on_disk(lake) == _live_files(lake)


async def test_a_chunk_exported_ahead_of_a_failed_commit_is_deleted_and_shipped_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _backlog(tmp_path) as (hogflare, shipper):
        lake = Lake(hogflare.settings.lake_dir)
        add_files = Lake.add_files
        commits = 0

        def third_commit_fails(
            self: Lake, name: str, paths: list[str], outbox_seq: int, store_id: str | None = None
        ) -> None:
            nonlocal commits
            commits += 1
            if commits == 3:
                raise OSError("disk full")
            add_files(self, name, paths, outbox_seq, store_id)

        monkeypatch.setattr(Lake, "add_files", third_commit_fails)
        started = _record_starts(monkeypatch)
        assert shipper.ship_lake() == 100
        with pytest.raises(OSError, match="disk full"):
            shipper.ship_lake()
        assert started == [100, 200]
        # The failed chunk's files and the one exported behind it are gone.
        assert _files_on_disk(lake) == _live_files(lake)
        assert lake.outbox_seq(EVENTS) == lake.outbox_seq(PERSONS) == 100
        assert shipper.drain() == 700
        assert sorted(row["event"] for row in hogflare.rows()) == sorted(f"e{n}" for n in range(400))
        assert _files_on_disk(lake) == _live_files(lake)
