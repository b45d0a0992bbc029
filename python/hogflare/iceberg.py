"""pyiceberg, adapted to the lake's needs: every file it writes reaches the disk before the catalog
commit that refers to it, and a commit does not recompute its table metadata on every read.
"""

from __future__ import annotations

import os
from types import MethodType, TracebackType
from typing import Any

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.io import InputFile, OutputFile, OutputStream
from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.table import Table, Transaction
from pyiceberg.table.metadata import TableMetadata

from hogflare.store import local_path


class _SyncedStream:
    """An output stream that reaches the disk when it is closed, not some time later."""

    def __init__(self, inner: OutputStream, path: str) -> None:
        self._inner = inner
        self._path = path

    def write(self, data: bytes) -> int:
        return self._inner.write(data)

    def tell(self) -> int:
        return self._inner.tell()

    def close(self) -> None:
        self._inner.close()
        _fsync(self._path)

    def __enter__(self) -> _SyncedStream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self._inner.close()


class _SyncedOutput(OutputFile):
    def __init__(self, inner: OutputFile) -> None:
        super().__init__(inner.location)
        self._inner = inner

    def __len__(self) -> int:
        return len(self._inner)

    def exists(self) -> bool:
        return self._inner.exists()

    def to_input_file(self) -> InputFile:
        return self._inner.to_input_file()

    def create(self, overwrite: bool = False) -> OutputStream:
        stream = self._inner.create(overwrite=overwrite)
        path = local_path(self.location)
        if path.endswith(".parquet"):
            # pyarrow's Parquet writer needs its own file object: synced before the commit instead.
            _UNSYNCED.add(path)
            return stream
        return _SyncedStream(stream, path)


#: Data files pyiceberg wrote (compaction) that must reach the disk before the next commit.
_UNSYNCED: set[str] = set()


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class SyncedFileIO(PyArrowFileIO):
    """pyiceberg's local file IO, with every file it writes (table metadata, manifest lists,
    manifests, data files) synced before the catalog commit that points at it: after a power
    cut the catalog never refers to a file that is not on the disk."""

    def new_output(self, location: str) -> OutputFile:  # type: ignore[override]
        return _SyncedOutput(super().new_output(location))


class SyncedSqlCatalog(SqlCatalog):
    def commit_table(self, table: Table, requirements: Any, updates: Any) -> Any:
        while _UNSYNCED:
            _fsync(_UNSYNCED.pop())
        return super().commit_table(table, requirements, updates)


class _Transaction(Transaction):
    """pyiceberg's transaction, its table metadata worked out once per staged change.

    pyiceberg applies every staged update to the table's metadata and deep-copies the result each
    time a transaction reads it, a few dozen times per commit: about 40 % of an `add_files`
    commit's CPU. The metadata is a frozen model that nothing changes in place, so the result
    holds until the table's metadata or the staged updates (a new tuple per change) are replaced.
    """

    _cached: tuple[object, object, TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        base, updates = self._table.metadata, self._updates
        cached = self._cached
        if cached is None or cached[0] is not base or cached[1] is not updates:
            cached = (base, updates, super().table_metadata)
            self._cached = cached
        return cached[2]


def with_cached_metadata(table: Table) -> Table:
    """``table``, its transactions (``add_files``, ``overwrite``…) using ``_Transaction``."""
    table.transaction = MethodType(_Transaction, table)  # type: ignore[method-assign]
    return table
