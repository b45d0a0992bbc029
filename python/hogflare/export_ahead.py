"""The lake's next chunk, written to Parquet while the shipper commits the current one.

Exporting a chunk is Rust without the GIL; committing it to the Iceberg tables and freeing the
outbox is Python. Done one after the other, a core sits idle during each commit while the
shipper drains a backlog. A chunk exported ahead is only ever committed after the one before
it; one that is not taken (the commits failed, or the shipper stopped) is deleted, files and all.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import structlog

from hogflare._hogflare import Export

log = structlog.get_logger("hogflare.shipper")


class ExportAhead:
    """At most one export running or done ahead of the shipper, for the rows after ``after``."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: tuple[int, Future[Export]] | None = None

    def start(self, after: int, export: Callable[[], Export]) -> None:
        """Begin ``export`` (of the rows after ``after``) in the background."""
        self.discard()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="export-ahead")
        self._pending = (after, self._pool.submit(export))

    def take(self, after: int) -> Export | None:
        """The export begun for the rows after ``after``, once it is done; ``None`` when there is
        none (one begun for other rows is deleted). Its error, if it failed, is raised here."""
        if self._pending is None or self._pending[0] != after:
            self.discard()
            return None
        _, future = self._pending
        self._pending = None
        return future.result()

    def discard(self) -> None:
        """Delete what the export ahead wrote, once it is done."""
        if self._pending is None:
            return
        _, future = self._pending
        self._pending = None
        try:
            export = future.result()
        except Exception:
            # A failed export removes its own files.
            return
        for _, _, path, _, _ in export.files:
            Path(path).unlink(missing_ok=True)
        if export.files:
            log.debug("discarded a chunk exported ahead", files=len(export.files))

    def close(self) -> None:
        self.discard()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
