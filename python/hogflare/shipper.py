"""The shipper: one process per data directory that drains the outbox, in order, into the sinks.

Rows leave the outbox only once every enabled sink (``HOGFLARE_SINKS``: the lake, Cloudflare
Pipelines) has them; each sink keeps its own cursor and ships from its own thread, so a slow
stream never holds back the lake, nor the lake the stream. See ``supervisor`` for how exactly one
shipper runs per data directory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from hogflare._hogflare import Export, StorageError, Store
from hogflare.compaction import compact_due
from hogflare.config import Settings
from hogflare.export_ahead import ExportAhead
from hogflare.lake import Lake
from hogflare.lake_tables import EVENTS, PERSONS, TABLES
from hogflare.metrics import SinkCounters, count_rewritten
from hogflare.pipelines import PIPELINES_CURSOR, PipelinesSink
from hogflare.sink_loop import ShutdownDeadline, SinkLoop
from hogflare.store import LAKE_CURSOR, UNCHECKED_FROM, UNCHECKED_PAST, open_store, positions_after

log = structlog.get_logger("hogflare.shipper")

#: Largest chunk read from the outbox for one lake commit.
_MAX_CHUNK_BYTES = 128 << 20
#: Rows freed per write transaction; each one briefly holds off ingestion's commits.
_TRIM_SLICE = 5_000
#: The longest pause between attempts to free delivered rows while freeing fails.
_TRIM_PAUSE_MAX_SECS = 60.0
#: How often maintenance looks for data files no commit took (it reads every live manifest).
_SWEEP_SECS = 3600.0
#: The longest the upkeep starts new rewrites of small files for, each time: the lake's flushes
#: wait meanwhile.
_COMPACT_SECS = 60.0


class Shipper:
    """Moves rows from the outbox to the sinks. ``ship_once`` is one chunk each; ``run`` loops."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store if store is not None else open_store(settings)
        sinks = settings.enabled_sinks
        self.lake = Lake(settings.lake_dir) if LAKE_CURSOR in sinks else None
        self.pipelines = PipelinesSink(settings, self.store) if PIPELINES_CURSOR in sinks else None
        self._table_seq: dict[str, int] | None = None
        #: Set while the lake's newest positions are from before a restore (see ``_checked``).
        self._unchecked = False
        #: When (``time.monotonic()``) to look again for data files that no commit took.
        self._next_sweep = 0.0
        self._counted = SinkCounters(LAKE_CURSOR)
        self._ahead = ExportAhead()
        self._pipelines_started = False
        #: Set when the shipper is asked to stop: the upkeep starts no more rewrites then.
        self._stop = threading.Event()
        #: Delivered rows wait to be freed (at start, or after a trim that failed): freed while the
        #: sinks are polled, not only after the next delivery, which a full outbox may never allow.
        self._trim_owed = True
        self._trim_pause = 0.0
        self._next_trim = 0.0

    def _resume(self) -> dict[str, int]:
        """Where each table stands, from the lake itself (the truth) and the store's cursor."""
        assert self.lake is not None
        stored = self.store.cursor(LAKE_CURSOR) or 0
        in_lake = self._checked({table: self.lake.outbox_seq(table, self.store.id) for table in TABLES})
        positions = {table: max(stored, seq) for table, seq in in_lake.items()}
        reached = min(positions.values())
        if stored or reached:
            self._report_missed(LAKE_CURSOR, reached)
        if reached > stored:
            # The lake committed rows the store never heard about (a crash in between).
            self._delivered(reached)
        return positions

    def _checked(self, in_lake: dict[str, int]) -> dict[str, int]:
        """The lake's positions, unless the server started without comparing them with the
        store (``level_with_lake`` noted where) and the lake holds positions from there on: then
        the store was restored from a backup older than the lake, the lake's rows there are from
        before the restore, and the rows taken since, numbered alike, must still be shipped."""
        unchecked = self.store.cursor(UNCHECKED_FROM) or 0
        if not unchecked:
            return in_lake
        newest = max(in_lake.values())
        past = self.store.cursor(UNCHECKED_PAST) or 0
        if newest < unchecked or (past and newest != past):
            # Nothing in the lake from there (the store was not behind it), or a commit of the
            # rows taken since has landed: there is nothing left to tell apart.
            self._clear_unchecked()
            return in_lake
        if not past:
            log.warning(
                "the store's outbox was behind the lake when the server started (restored from an older "
                "backup?), and the lake could not be read then: the rows taken since are shipped after "
                f"position {unchecked - 1}; the lake keeps its rows from before the restore",
                position=unchecked - 1,
                lake_position=newest,
            )
            self.store.set_cursor(UNCHECKED_PAST, newest)
        self._unchecked = True
        return {table: min(seq, unchecked - 1) for table, seq in in_lake.items()}

    def _clear_unchecked(self) -> None:
        self.store.set_cursor(UNCHECKED_FROM, 0)
        self.store.set_cursor(UNCHECKED_PAST, 0)
        self._unchecked = False

    def _report_missed(self, sink: str, position: int) -> None:
        """Rows freed from the outbox while a sink was switched off (``HOGFLARE_SINKS``) never
        reach it; say so when it starts again, rather than skip them silently."""
        first = self.store.first_position()
        if position + 1 < first:
            log.warning(
                "rows this sink never got are no longer in the outbox (freed while it was switched off, "
                "or the store was restored from a backup); it goes on with the rows still waiting",
                sink=sink,
                missed_from=position + 1,
                missed_to=first - 1,
            )

    def _delivered(self, seq: int) -> None:
        """The lake has the rows up to ``seq``: remember it, and free what every sink has."""
        self.store.set_cursor(LAKE_CURSOR, seq)
        self._trim()

    def _trim(self) -> None:
        """Free, in short slices, the rows every enabled sink has."""
        self._trim_owed = True
        cursors = [self.store.cursor(name) or 0 for name in self.settings.enabled_sinks]
        upto = min(cursors)
        while upto and self.store.trim_outbox(upto, limit=_TRIM_SLICE):
            pass
        self._trim_owed = False

    def _trim_if_owed(self) -> None:
        """Free what `_trim` left; while freeing fails (the store's map full), again after a
        pause that doubles, not at every poll of the sinks."""
        if not self._trim_owed or time.monotonic() < self._next_trim:
            return
        try:
            self._trim()
        except StorageError:
            self._trim_pause = min(2 * self._trim_pause or 1.0, _TRIM_PAUSE_MAX_SECS)
            self._next_trim = time.monotonic() + self._trim_pause
            log.exception("cannot free delivered rows from the outbox", retry_in_secs=self._trim_pause)
        else:
            self._trim_pause = 0.0

    def ship_once(self) -> int:
        """Ship one chunk of the outbox to each sink; returns how many outbox positions (rows) they took."""
        shipped = 0
        if self.lake is not None:
            shipped = self.ship_lake()
        if self.pipelines is not None:
            shipped += self.ship_pipelines()
        return shipped

    def ship_lake(self) -> int:
        """One chunk to the lake; returns the outbox positions (rows) it took."""
        try:
            return self._ship_lake()
        except Exception:
            self._counted.retries.inc()
            raise

    def ship_pipelines(self) -> int:
        """One chunk to the streams (none while they are left alone after a failure)."""
        assert self.pipelines is not None
        if not self._pipelines_started:
            self._pipelines_started = True
            if self.store.cursor(PIPELINES_CURSOR) is not None:
                self._report_missed(PIPELINES_CURSOR, self.pipelines.position)
        sent = self.pipelines.ship_once()
        if sent:
            self._trim()
        return sent

    def _export(self, after: int, events_upto: int, persons_upto: int) -> Export:
        assert self.lake is not None
        return self.store.export(
            after,
            events_upto=events_upto,
            persons_upto=persons_upto,
            max_rows=self.settings.flush_rows,
            max_bytes=_MAX_CHUNK_BYTES,
            events_dir=str(self.lake.data_dir(EVENTS)),
            persons_dir=str(self.lake.data_dir(PERSONS)),
            writers=self.settings.export_writers,
        )

    def _ship_lake(self) -> int:
        """Ship one chunk of the outbox to the lake; returns how many outbox positions (rows) were read."""
        assert self.lake is not None
        if self._table_seq is None:
            self._table_seq = self._resume()
        self._trim_if_owed()
        # Each table knows how far it got; after a crash between the commits of two tables they
        # differ, and the chunk is read from the lower one while each skips what it already has.
        cursor = min(self._table_seq.values())
        level = cursor == max(self._table_seq.values())
        export = self._ahead.take(after=cursor) if level else None
        if export is None:
            self._ahead.discard()
            export = self._export(cursor, self._table_seq[EVENTS], self._table_seq[PERSONS])
        if export.positions == 0:
            return 0
        if level and self._after(export.last_seq) >= self.settings.flush_rows:
            # A backlog: the next chunk is written while this one is committed (the export runs
            # without the GIL). Its rows all come after this one's; if these commits fail, it is
            # deleted. Rows trickling in wait for the next flush as before, not for this.
            last = export.last_seq
            self._ahead.start(last, lambda: self._export(last, last, last))
        by_table: dict[str, list[str]] = {}
        rows: dict[str, int] = {}
        for table, _, path, count, _ in export.files:
            by_table.setdefault(table, []).append(path)
            rows[table] = rows.get(table, 0) + count
        # Persons first: a reader who sees an event row can find the person snapshot it made.
        for table in sorted(by_table, key=lambda name: name != PERSONS):
            try:
                self.lake.add_files(table, by_table[table], export.last_seq, self.store.id)
            except Exception:
                self._table_seq = None
                self._ahead.discard()
                for name, leftover in by_table.items():
                    self._forget_unless_committed(name, leftover, export.last_seq)
                raise
            self._counted.batches.inc()
            self._counted.rows.inc(rows[table])
        # Every table is at the chunk's end now, those that had no rows in it too, unless one was
        # further already (a crash between the tables' commits, then a smaller chunk).
        for table, seq in self._table_seq.items():
            self._table_seq[table] = max(seq, export.last_seq)
        if self._unchecked:
            self._clear_unchecked()  # the lake's newest rows are the ones taken since now
        self._delivered(export.last_seq)
        return int(export.positions)

    def _forget_unless_committed(self, table: str, paths: list[str], seq: int) -> None:
        """Delete the files of a failed commit, unless the commit did land after all (an error
        raised after the catalog accepted it): then the lake references them."""
        assert self.lake is not None
        try:
            landed = self.lake.outbox_seq(table, self.store.id) >= seq
        except Exception:
            log.exception("cannot tell whether the commit landed; keeping its files", table=table)
            return
        if not landed:
            for path in paths:
                Path(path).unlink(missing_ok=True)

    def drain(self, deadline: float | None = None) -> int:
        """Ship until the outbox is empty, or until ``time.monotonic()`` passes ``deadline``;
        returns the rows shipped. What is left stays in the outbox for the next start."""
        total = 0
        while (deadline is None or time.monotonic() < deadline) and (shipped := self.ship_once()):
            total += shipped
        self._ahead.discard()
        return total

    def pending(self) -> int:
        """Outbox rows some enabled sink still lacks."""
        return max(self.lake_pending(), self.pipelines_pending())

    def lake_pending(self) -> int:
        """Outbox rows the lake lacks."""
        if self.lake is None:
            return 0
        if self._table_seq is None:
            self._table_seq = self._resume()
        self._trim_if_owed()
        return self._after(min(self._table_seq.values()))

    def pipelines_pending(self) -> int:
        """Outbox rows the streams lack."""
        if self.pipelines is None:
            return 0
        if self.lake is None:
            self._trim_if_owed()
        return self._after(self.pipelines.position)

    def _after(self, position: int) -> int:
        return positions_after(self.store, position)

    def _pipelines_deadline(self, deadline: float) -> None:
        assert self.pipelines is not None
        self.pipelines.send_by = deadline

    def maintain(self) -> None:
        """Forget old dedupe entries, cookieless mode's expired salts (and make the coming days'),
        rewrite the small files that gathered (``HOGFLARE_COMPACT_FILES``), trim the snapshot
        history, and delete the data files compaction replaced a while ago; the first time and
        then hourly, also the files no commit took (a file a crash left just before a restart is
        too young the first time)."""
        now = time.time()
        while self.store.expire_seen(window_days=self.settings.dedupe_window_days, limit=_TRIM_SLICE, now=now):
            pass
        self.store.maintain_cookieless(now=now)
        if self.lake is not None:
            sweep = time.monotonic() >= self._next_sweep
            compact_until = time.monotonic() + _COMPACT_SECS
            for table in TABLES:
                if self.settings.compact_files:
                    self._compact(table, compact_until)
                try:
                    self.lake.trim_history(table)
                except Exception:
                    # Trimming writes metadata, which a full disk refuses; deleting the files
                    # that are due is what frees space, so it goes on.
                    log.exception("cannot trim the snapshot history", table=table)
                if sweep:
                    self._delete_uncommitted(table)
            if sweep:
                self._next_sweep = time.monotonic() + _SWEEP_SECS
            self.lake.delete_unreferenced()

    def _compact(self, table: str, until: float) -> None:
        assert self.lake is not None
        try:
            replaced = compact_due(self.lake, table, self.settings.compact_files, until, self._stop)
        except Exception:
            # Small files only cost speed; the rows are in either way, and shipping goes on.
            log.exception("cannot rewrite small files; will try again", table=table)
            return
        if replaced:
            count_rewritten(table, replaced)
            log.info("rewrote small files", table=table, files=replaced)

    def _delete_uncommitted(self, table: str) -> None:
        assert self.lake is not None
        try:
            deleted = self.lake.delete_uncommitted(table)
        except Exception:
            # Only disk space is at stake; shipping and the other upkeep go on.
            log.exception("cannot look for data files no commit took", table=table)
            return
        if deleted:
            log.info("deleted data files no commit took", table=table, files=deleted)

    def run(self, stop: threading.Event) -> None:
        """Ship each sink from its own thread until ``stop`` is set, then make a last delivery
        bounded by the shutdown timeout."""
        self._stop = stop
        # A chunk being sent to the streams when the stop comes starts no request past the
        # deadline, which counts from the stop, not from when that chunk is done.
        shutdown = ShutdownDeadline(
            self.settings.shutdown_timeout_secs, [] if self.pipelines is None else [self._pipelines_deadline]
        )
        sinks: list[tuple[str, Callable[[], int], Callable[[], int]]] = []
        if self.lake is not None:
            sinks.append((LAKE_CURSOR, self.ship_lake, self.lake_pending))
        if self.pipelines is not None:
            sinks.append((PIPELINES_CURSOR, self.ship_pipelines, self.pipelines_pending))
        loops = [
            SinkLoop(cursor, ship, pending, self.settings, stop, shutdown=shutdown) for cursor, ship, pending in sinks
        ]
        # Maintenance rides with the first sink: snapshot expiry must not race the lake's commits.
        loops[0].maintain = self.maintain

        def deadline_once_stopped() -> None:
            stop.wait()
            shutdown.at()

        threading.Thread(target=deadline_once_stopped, name="deadline", daemon=True).start()
        for loop in loops:
            loop.start()
        for loop in loops:
            loop.join()
        self._ahead.close()
        if self.pipelines is not None:
            self.pipelines.shutdown()
