"""The lake: Iceberg tables of Parquet files under ``<data_dir>/lake``, with a SQLite catalog.

Each append records the last outbox sequence number it contains in its snapshot summary, in the
same atomic catalog commit as the data. After a crash the shipper resumes from that number, so a
row is never lost and never written twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import structlog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.io import PY_IO_IMPL, FileIO
from pyiceberg.manifest import DataFile, ManifestEntryStatus, ManifestFile
from pyiceberg.table import Table

from hogflare.iceberg import SyncedFileIO, SyncedSqlCatalog, with_cached_metadata
from hogflare.lake_tables import MAINTAINED_PROPERTIES, TABLE_PROPERTIES, TABLES, day_partition
from hogflare.store import (
    CATALOG_NAME,
    NAMESPACE,
    SEQ_PROPERTY,
    STORE_PROPERTY,
    check_lake_place,
    local_path,
    newest_position,
)

log = structlog.get_logger("hogflare.lake")

#: Snapshots a table keeps of its history. pyiceberg copies the whole table metadata, snapshot
#: list included, many times per commit, so a commit costs in proportion to the history it
#: carries: at a commit per flush, an hour of history made each commit several times dearer, and
#: a day of it would stop the shipper keeping up. The history is cut back to the newest
#: ``HISTORY_KEEP`` once it reaches ``HISTORY_MAX``, one extra commit per many.
HISTORY_KEEP = 4
HISTORY_MAX = 16

#: Data files that compaction replaced are deleted this long after the last snapshot that could
#: show them expires: a query that listed a table's files a moment before may still open them.
UNREFERENCED_GRACE_SECS = 600
#: Where those files wait, one ``<unix time> <path>`` line each, under the lake's root.
UNREFERENCED_LIST = "unreferenced-files"


@contextlib.contextmanager
def _creating(root: Path) -> Iterator[None]:
    """Serialise catalog and table creation between processes (the shipper and `hogflare query`
    may open a new lake at the same moment; SQLite's `CREATE TABLE` is not `IF NOT EXISTS` there)."""
    with (root / "catalog.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _live_manifests(table: Table) -> dict[str, ManifestFile]:
    """The manifests of every snapshot a table keeps, by path."""
    return {
        manifest.manifest_path: manifest
        for snapshot in table.metadata.snapshots
        for manifest in snapshot.manifests(table.io)
    }


def _deleted_data_files(io: FileIO, manifests: Iterable[ManifestFile]) -> set[str]:
    """The data files that manifests record as deleted.

    Called with the manifests only expired snapshots referred to: the snapshot that deleted a
    file was then expired, and so was every older one (snapshots expire oldest first), so no
    live snapshot can still show the file."""
    deleted = set()
    for manifest in manifests:
        if manifest.deleted_files_count == 0:
            continue  # most are: appends and manifest merges delete nothing, and need no reading
        with contextlib.suppress(FileNotFoundError):
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=False):
                if entry.status == ManifestEntryStatus.DELETED:
                    deleted.add(entry.data_file.file_path)
    return deleted


class Lake:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        check_lake_place(root)
        self.root = root
        warehouse = root / "warehouse"
        warehouse.mkdir(exist_ok=True)
        with _creating(root):
            self.catalog = SyncedSqlCatalog(
                CATALOG_NAME,
                uri=f"sqlite:///{root / 'catalog.db'}",
                warehouse=warehouse.resolve().as_uri(),
                **{PY_IO_IMPL: f"{SyncedFileIO.__module__}.SyncedFileIO"},
            )
            self.catalog.create_namespace_if_not_exists(NAMESPACE)
        self._tables: dict[str, Table] = {}

    def table(self, name: str) -> Table:
        if name not in self._tables:
            schema, partition_column = TABLES[name]
            with _creating(self.root):
                try:
                    # Loaded first: pyiceberg's create writes a first table version before it
                    # finds the table exists, and every open would leave one behind.
                    table = self.catalog.load_table(f"{NAMESPACE}.{name}")
                except NoSuchTableError:
                    table = self.catalog.create_table(
                        f"{NAMESPACE}.{name}",
                        schema=schema,
                        partition_spec=day_partition(schema, partition_column),
                        properties=TABLE_PROPERTIES,
                    )
                missing = {
                    key: value for key, value in MAINTAINED_PROPERTIES.items() if table.properties.get(key) != value
                }
                if missing:
                    # A table made by an earlier version (whose files had statistics everywhere,
                    # and whose commits pyiceberg retried); if another process commits first,
                    # the next open tries again.
                    with contextlib.suppress(CommitFailedException), table.transaction() as transaction:
                        transaction.set_properties(missing)
                self._tables[name] = with_cached_metadata(table)
        return self._tables[name]

    def refresh(self, name: str) -> Table:
        table = self.table(name)
        table.refresh()
        return table

    def data_dir(self, name: str) -> Path:
        """Where a table's Parquet files go (Iceberg's `<location>/data`)."""
        return Path(local_path(self.table(name).location())) / "data"

    def add_files(self, name: str, paths: list[str], outbox_seq: int, store_id: str | None = None) -> None:
        """Commit Parquet files to a table and record, in the same atomic commit, that outbox
        rows up to ``outbox_seq`` (of the store ``store_id``) are in."""
        properties = {SEQ_PROPERTY: str(outbox_seq)}
        if store_id is not None:
            properties[STORE_PROPERTY] = store_id
        table = self.table(name)
        try:
            table.add_files(paths, snapshot_properties=properties, check_duplicate_files=False)
        except CommitFailedException:
            # Someone else (compaction) committed first; nothing of ours landed. Try once more.
            table = self.refresh(name)
            table.add_files(paths, snapshot_properties=properties, check_duplicate_files=False)
        if len(table.metadata.snapshots) >= HISTORY_MAX:
            try:
                self.trim_history(name)
            except Exception:
                # The rows are in; a history left long for now is only slower commits.
                log.exception("cannot trim the table's snapshot history; will try again", table=name)

    def outbox_seq(self, name: str, store_id: str | None = None) -> int:
        """The last outbox sequence number this table holds (0 when it holds none). With
        ``store_id``, 0 as well when the newest position recorded is another store's: a store
        that replaced the one the lake followed has none of its rows in the lake yet."""
        snapshots = self.refresh(name).snapshots()
        return newest_position(((snapshot.sequence_number or 0, snapshot.summary) for snapshot in snapshots), store_id)

    def live_files(self, name: str) -> list[DataFile]:
        """The live data files of a table, as its manifests describe them."""
        table = self.refresh(name)
        if table.current_snapshot() is None:
            return []
        return [task.file for task in table.scan().plan_files()]

    def data_files(self, name: str) -> list[str]:
        """The live Parquet files of a table, as local paths."""
        return [local_path(file.file_path) for file in self.live_files(name)]

    def arrow_schema(self, name: str) -> pa.Schema:
        return self.table(name).schema().as_arrow()

    def trim_history(self, name: str, keep: int | None = None) -> int:
        """Expire all but the newest ``keep`` snapshots (the current one always stays) and delete
        the manifest lists and manifests only they referenced; returns how many were expired.

        Data files that only expired snapshots showed (those compaction replaced) are listed for
        ``delete_unreferenced``, not deleted: a reader that planned its scan a moment ago may
        still be opening them."""
        table = self.refresh(name)
        current = table.current_snapshot()
        history = sorted(table.metadata.snapshots, key=lambda snapshot: snapshot.sequence_number or 0)
        keep = HISTORY_KEEP if keep is None else keep
        old = [
            snapshot
            for snapshot in history[: max(0, len(history) - keep)]
            if current is None or snapshot.snapshot_id != current.snapshot_id
        ]
        if not old:
            return 0
        try:
            table.maintenance.expire_snapshots().by_ids([snapshot.snapshot_id for snapshot in old]).commit()
        except CommitFailedException:
            return 0  # someone else committed meanwhile; the next commit tries again
        io = table.io
        live = _live_manifests(table)
        expired: dict[str, ManifestFile] = {}
        for snapshot in old:
            with contextlib.suppress(FileNotFoundError):
                expired.update((manifest.manifest_path, manifest) for manifest in snapshot.manifests(io))
        orphans = {path: manifest for path, manifest in expired.items() if path not in live}
        # Listed before the manifests that name them go: a crash in between leaves files behind,
        # never a list that misses them.
        self._list_unreferenced(_deleted_data_files(io, orphans.values()))
        for location in {snapshot.manifest_list for snapshot in old} | orphans.keys():
            Path(local_path(location)).unlink(missing_ok=True)
        return len(old)

    def _list_unreferenced(self, paths: Iterable[str]) -> None:
        now = int(time.time())
        lines = "".join(f"{now} {local_path(path)}\n" for path in paths)
        if lines:
            with (self.root / UNREFERENCED_LIST).open("a", encoding="utf-8") as listed:
                listed.write(lines)

    def _unreferenced_lines(self) -> list[str]:
        try:
            return (self.root / UNREFERENCED_LIST).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []

    def delete_unreferenced(self, grace_secs: float = UNREFERENCED_GRACE_SECS) -> int:
        """Delete the data files no snapshot has referred to for ``grace_secs``; returns how many."""
        lines = self._unreferenced_lines()
        if not lines:
            return 0
        listed = self.root / UNREFERENCED_LIST
        cutoff = time.time() - grace_secs
        waiting = []
        for line in lines:
            stamp, _, path = line.partition(" ")
            try:
                listed_at = float(stamp)
            except ValueError:
                # A line a crash cut short: the file it named, if any, is no table's, and the
                # sweep of uncommitted files deletes it.
                log.warning("skipping an unreadable line of the unreferenced files list", line=line[:200])
                continue
            if listed_at > cutoff:
                waiting.append(line)
            elif path:
                Path(path).unlink(missing_ok=True)
        rest = listed.with_name(listed.name + ".tmp")
        rest.write_text("".join(f"{line}\n" for line in waiting), encoding="utf-8")
        rest.replace(listed)
        return len(lines) - len(waiting)

    def delete_uncommitted(self, name: str, grace_secs: float = UNREFERENCED_GRACE_SECS) -> int:
        """Delete the data files of a table that no live snapshot names and none is waiting for,
        written more than ``grace_secs`` ago: what a crash between writing and committing left
        behind (the rows are shipped again, in new files). Returns how many. Reads every live
        manifest, so it is for a shipper's start, not for every flush."""
        table = self.refresh(name)
        live, named = set(), set()
        manifests = _live_manifests(table)
        for manifest in manifests.values():
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                file = local_path(entry.data_file.file_path)
                named.add(file)
                if entry.status != ManifestEntryStatus.DELETED:
                    live.add(file)
        on_disk = {str(path): path for path in self.data_dir(name).rglob("*.parquet")}
        if not live <= on_disk.keys():
            # Paths spelled otherwise than the table names them (or files gone): nothing here
            # can be told apart safely.
            log.warning("not looking for uncommitted files: live files are not where the table says", table=name)
            return 0
        named.update(line.partition(" ")[2] for line in self._unreferenced_lines())
        cutoff = time.time() - grace_secs
        deleted = 0
        # A file is written under a temporary name and renamed once synced; one a crash left
        # half-written was never a table's.
        half_written = self.data_dir(name).rglob("*.parquet.tmp")
        for text, path in [*on_disk.items(), *((str(path), path) for path in half_written)]:
            # A file being written now (by a compaction or an export) is younger than the grace period.
            if text not in named and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                deleted += 1
        return deleted + self._delete_uncommitted_metadata(table, manifests.keys(), cutoff)

    def _delete_uncommitted_metadata(self, table: Table, manifests: Iterable[str], cutoff: float) -> int:
        """Delete the metadata files (manifests, manifest lists, table versions) written by a
        commit that lost to another or was cut short by a crash: no version of the table the
        catalog keeps names them."""
        live = {local_path(path) for path in manifests}
        live.update(local_path(snapshot.manifest_list) for snapshot in table.metadata.snapshots)
        live.add(local_path(table.metadata_location))
        folder = Path(local_path(table.location())) / "metadata"
        on_disk = {str(path): path for path in folder.iterdir() if path.is_file()}
        if not live <= on_disk.keys():
            log.warning("not looking for uncommitted metadata: live files are not where the table says")
            return 0
        # Earlier versions stay for pyiceberg to delete as they leave the log.
        named = live | {local_path(entry.metadata_file) for entry in table.metadata.metadata_log}
        deleted = 0
        for text, path in on_disk.items():
            # Another process's commit may delete a version that left its log meanwhile.
            with contextlib.suppress(FileNotFoundError):
                if text not in named and path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    deleted += 1
        return deleted
