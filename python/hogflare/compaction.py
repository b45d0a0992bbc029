"""Which of a table's small Parquet files to rewrite together, and the rewrite itself.

Every flush adds a file to each table it has rows for, so a busy day gathers thousands of them,
and every commit and every query reads one manifest entry per live file: left alone, the
shipper's commits grow dearer all day long. Two ways of rewriting them:

- ``hogflare compact`` takes all the small files of a day (``Compactor.compact_day``);
- the shipper's upkeep takes files of about the same size once ``HOGFLARE_COMPACT_FILES`` of
  them have gathered in a day (``compact_due``), so a row is rewritten a few times at most
  (each rewrite moves it into a file several times larger) while no day keeps more than a few
  dozen small files.

A rewrite streams its files through the core a slice at a time, and the lake's commit swaps
exactly the files it read for the one it wrote.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.io.pyarrow import parquet_file_to_data_file
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from hogflare._hogflare import StorageError, rewrite_parquet
from hogflare.store import SEQ_PROPERTY, STORE_PROPERTY, local_path

if TYPE_CHECKING:
    from hogflare.lake import Lake

log = structlog.get_logger("hogflare.compaction")

#: How many times a rewrite tries to commit before it gives up.
COMPACT_ATTEMPTS = 10


class CompactionConflictError(Exception):
    """A compaction lost to other commits every time it tried; nothing changed."""


#: Files under this size count as small.
SMALL_BYTES = 64 << 20
#: The most input one rewrite takes: its output stays about that size or smaller.
REWRITE_MAX_BYTES = 256 << 20
#: Files whose sizes lie within this factor of each other are rewritten together by the shipper.
SIZE_CLASS_FACTOR = 8


def file_day(file: DataFile) -> dt.date:
    """The day of the partition a table's data file belongs to."""
    return dt.date(1970, 1, 1) + dt.timedelta(days=int(file.partition[0]))


def size_class(size: int) -> int:
    return int(math.log(max(size, 1), SIZE_CLASS_FACTOR))


def rewrites(files: Sequence[DataFile], max_bytes: int = REWRITE_MAX_BYTES) -> list[list[DataFile]]:
    """``files`` (of one day) cut, in order, into groups of at most ``max_bytes``; a group of one
    file is left out, as rewriting it alone would change nothing."""
    groups: list[list[DataFile]] = []
    group: list[DataFile] = []
    size = 0
    for file in files:
        if group and size + file.file_size_in_bytes > max_bytes:
            groups.append(group)
            group, size = [], 0
        group.append(file)
        size += file.file_size_in_bytes
    groups.append(group)
    return [group for group in groups if len(group) > 1]


def small_files_by_day(files: Iterable[DataFile], small_bytes: int) -> dict[dt.date, list[DataFile]]:
    """The small files of each day, oldest written first (file names begin with the outbox
    position they reach, and a rewrite's file takes its first input's place)."""
    days: dict[dt.date, list[DataFile]] = {}
    for file in files:
        # A file of rows without the partition column's value has no day to be rewritten in.
        if file.file_size_in_bytes < small_bytes and file.partition[0] is not None:
            days.setdefault(file_day(file), []).append(file)
    for day_files in days.values():
        day_files.sort(key=lambda file: file.file_path.rsplit("/", 1)[-1])
    return days


def due_rewrites(files: Iterable[DataFile], min_files: int, small_bytes: int = SMALL_BYTES) -> list[list[DataFile]]:
    """The shipper's rewrites: in each day, the small files of each size class that has
    ``min_files`` of them, in groups of at most ``REWRITE_MAX_BYTES``."""
    due: list[list[DataFile]] = []
    for _day, day_files in sorted(small_files_by_day(files, small_bytes).items()):
        classes: dict[int, list[DataFile]] = {}
        for file in day_files:
            classes.setdefault(size_class(file.file_size_in_bytes), []).append(file)
        for _class, class_files in sorted(classes.items()):
            if len(class_files) >= min_files:
                due.extend(rewrites(class_files))
    return due


def rewritten_path(first: DataFile) -> str:
    """Where a rewrite's file goes: beside its first input, named after it (file names begin
    with the outbox position they reach), so it sorts among the day's files where its rows came
    in."""
    folder, _, name = first.file_path.rpartition("/")
    position = name.split("-", 1)[0]
    return f"{folder}/{position}-compacted-{uuid.uuid4().hex}.parquet"


def _position(snapshot: Snapshot | None) -> dict[str, str]:
    """The outbox position the table's newest snapshot records, for the rewrite's snapshot to
    record again: the shipper resumes from the newest one, and an older position would send it
    back over rows the lake has."""
    summary = snapshot.summary if snapshot is not None else None
    properties: dict[str, str] = {}
    for key in (SEQ_PROPERTY, STORE_PROPERTY):
        value = summary[key] if summary is not None else None
        if value is not None:
            properties[key] = str(value)
    return properties


class Compactor:
    """Rewrites files of one table. It keeps the table's live files as of the newest snapshot it
    knows, so that rewrites one after another plan the table (read every manifest) once, and
    again only after someone else's commit."""

    def __init__(self, lake: Lake, name: str) -> None:
        self.lake = lake
        self.name = name
        self._snapshot_id: int | None = None
        self._live: dict[str, DataFile] = {}

    def live(self) -> dict[str, DataFile]:
        """The table's live data files, by path."""
        return self._refreshed()[1]

    def _refreshed(self) -> tuple[Table, dict[str, DataFile]]:
        table = self.lake.refresh(self.name)
        current = table.current_snapshot()
        if current is None:
            self._snapshot_id, self._live = None, {}
        elif current.snapshot_id != self._snapshot_id:
            # The snapshot is taken as known only once planned: a plan that fails is made again.
            self._live = {task.file.file_path: task.file for task in table.scan().plan_files()}
            self._snapshot_id = current.snapshot_id
        return table, self._live

    def replace(self, files: Sequence[DataFile]) -> int:
        """Rewrite ``files`` (live files of one day) as one file, and commit the one in place of
        the others; returns how many files it replaced (0 when another compaction replaced some
        of them meanwhile). Raises ``CompactionConflictError`` when other commits won every
        attempt; then, as on any error, the table is as it was."""
        day = file_day(files[0])
        output = rewritten_path(files[0])
        rows, _ = rewrite_parquet(self.name, [local_path(file.file_path) for file in files], local_path(output))
        committed = False
        try:
            held = sum(file.record_count for file in files)
            if rows != held:
                raise StorageError(f"{self.name} {day}: {len(files)} files hold {held} rows, {rows} were read")
            for _attempt in range(COMPACT_ATTEMPTS):
                table, live = self._refreshed()
                if any(file.file_path not in live for file in files):
                    return 0
                rewritten = parquet_file_to_data_file(table.io, table.metadata, output)
                try:
                    with table.transaction() as transaction:
                        snapshot = transaction.update_snapshot(snapshot_properties=_position(table.current_snapshot()))
                        with snapshot.overwrite() as swap:
                            for file in files:
                                swap.delete_data_file(live[file.file_path])
                            swap.append_data_file(rewritten)
                except (CommitFailedException, ValidationException):
                    continue  # the shipper committed meanwhile: again, on its snapshot
                committed = True
                self._committed(table, files, rewritten)
                return len(files)
            raise CompactionConflictError(
                f"{self.name} {day}: other commits to the table won each of {COMPACT_ATTEMPTS} attempts; "
                "try again when it is quieter"
            )
        finally:
            if not committed:
                self._forget_unless_committed(output)

    def compact_day(self, day: dt.date, small_bytes: int = SMALL_BYTES) -> tuple[int, int]:
        """Rewrite the small files of one day, in groups of at most ``REWRITE_MAX_BYTES``;
        returns how many files were replaced and how many were written in their place."""
        files = small_files_by_day(self.live().values(), small_bytes).get(day, [])
        replaced = written = 0
        for group in rewrites(files):
            if taken := self.replace(group):
                replaced += taken
                written += 1
        return replaced, written

    def _committed(self, table: Table, files: Sequence[DataFile], rewritten: DataFile) -> None:
        """What the table's live files are after a rewrite's commit, without planning it again."""
        current = table.current_snapshot()
        self._snapshot_id = current.snapshot_id if current is not None else None
        for file in files:
            del self._live[file.file_path]
        self._live[rewritten.file_path] = rewritten

    def _forget_unless_committed(self, output: str) -> None:
        """Delete a rewrite's file unless the table names it after all (an error raised after
        the catalog took the commit)."""
        try:
            named = output in self.live()
        except Exception:
            log.exception("cannot tell whether a compaction landed; keeping its file", table=self.name, file=output)
            return
        if not named:
            Path(local_path(output)).unlink(missing_ok=True)


def compact_due(lake: Lake, name: str, min_files: int, deadline: float, stop: threading.Event | None = None) -> int:
    """The shipper's upkeep: make the rewrites ``due_rewrites`` finds, until ``time.monotonic()``
    passes ``deadline`` or ``stop`` is set; returns how many files were replaced."""
    compactor = Compactor(lake, name)
    replaced = 0
    for group in due_rewrites(compactor.live().values(), min_files):
        if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            break
        try:
            replaced += compactor.replace(group)
        except CompactionConflictError:
            break  # beside a `hogflare compact` run: the next upkeep finds what is still due
        except Exception:
            # One group's trouble (a file that cannot be read) leaves the others to be rewritten.
            day = file_day(group[0])
            log.exception("cannot rewrite small files; leaving them", table=name, day=str(day), files=len(group))
    return replaced
