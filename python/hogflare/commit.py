"""Group commit: the requests that arrive while one store commit is syncing share the next one.

A lone request commits at once; under load each commit carries everything that queued up behind
the previous fsync, so durability costs one sync per batch of requests, not one per request.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter

from hogflare import metrics
from hogflare._hogflare import Batch, Store
from hogflare.config import Settings

#: ``(stored, duplicates, warnings)`` of one request's commit.
Outcome = tuple[int, int, dict[str, int]]


def open_store(settings: Settings) -> Store:
    return Store(str(settings.store_dir), map_size=settings.lmdb_map_size, group_types=settings.group_types)


class GroupCommitter:
    def __init__(self, store: Store, *, dedupe_window_days: int, max_outbox_bytes: int) -> None:
        self._store = store
        self._dedupe_window_days = dedupe_window_days
        self._max_outbox_bytes = max_outbox_bytes
        self._pending: list[tuple[Batch, asyncio.Future[Outcome]]] = []
        self._inflight: asyncio.Future[list[Outcome]] | None = None
        # One thread: LMDB allows one writer per environment, and the GIL is released inside.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="hogflare-commit")

    async def commit(self, batch: Batch) -> Outcome:
        """Store a batch durably; returns ``(stored, duplicates, warnings)`` once it is synced to disk."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._pending.append((batch, future))
        if self._inflight is None:
            self._start(loop)
        # If this request is cancelled (the client hung up), only its future is: the batch is
        # already in the commit, which goes on for everyone sharing it.
        return await future

    def _run(self, batches: list[Batch]) -> list[Outcome]:
        started = perf_counter()
        outcomes = self._store.commit(
            batches, dedupe_window_days=self._dedupe_window_days, max_outbox_bytes=self._max_outbox_bytes
        )
        metrics.observe_commit(len(batches), perf_counter() - started, self._store.last_sync_secs())
        return outcomes

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        items, self._pending = self._pending, []
        inflight = loop.run_in_executor(self._executor, self._run, [batch for batch, _ in items])
        self._inflight = inflight
        inflight.add_done_callback(functools.partial(self._finish, loop, items))

    def _finish(
        self,
        loop: asyncio.AbstractEventLoop,
        items: list[tuple[Batch, asyncio.Future[Outcome]]],
        done: asyncio.Future[list[Outcome]],
    ) -> None:
        self._inflight = None
        error = done.exception()
        for index, (_, future) in enumerate(items):
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(done.result()[index])
        if self._pending:
            self._start(loop)

    async def close(self) -> None:
        """Wait for the commits in flight, then stop the commit thread."""
        while self._inflight is not None:
            await asyncio.wait([self._inflight])
        self._executor.shutdown(wait=True)
