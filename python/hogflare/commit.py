"""Group commit: the requests that arrive while one store commit is syncing share the next one.

A lone request commits at once; under load each commit carries everything that queued up behind
the previous sync (or behind another worker's commit), so durability costs one sync per batch of
requests, not one per request.

The commits run on the core's own thread (``CommitThread``), which never takes the GIL: each
request is handed to it as soon as it is decoded, and it signals a finished commit on a socket
the event loop watches; the loop answers the requests when it next looks.

Commits that stop finishing (another process holding the store's write lock without letting go, a
disk that no longer answers) would otherwise queue every new request, and each retry of it, in
memory for as long as they last: past ``STALLED_COMMIT_SECS`` new requests are refused with a 503
instead, so clients back off, and readiness says so.
"""

from __future__ import annotations

import asyncio

import structlog

from hogflare import metrics
from hogflare._hogflare import Batch, CommitThread, FinishedCommit, StorageError, Store

#: How long requests may wait with no commit finishing before new ones are refused.
STALLED_COMMIT_SECS = 10.0

#: ``(stored, duplicates, warnings)`` of one request's commit.
Outcome = tuple[int, int, dict[str, int]]

log = structlog.get_logger("hogflare.commit")


class GroupCommitter:
    def __init__(self, store: Store, *, dedupe_window_days: int, max_outbox_bytes: int) -> None:
        self._thread = CommitThread(store, dedupe_window_days=dedupe_window_days, max_outbox_bytes=max_outbox_bytes)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The requests handed to the thread and not yet answered, by ticket.
        self._waiting: dict[int, asyncio.Future[Outcome]] = {}
        #: When requests began waiting with none before them, and when a commit last finished
        #: (the loop's clock). A request waits through the commit under way and the one it joins,
        #: so the stall is counted from the later of the two, not from the oldest request's age.
        self._waiting_since = 0.0
        self._last_finished = 0.0
        self._drained: asyncio.Event | None = None

    async def commit(self, batch: Batch) -> Outcome:
        """Store a batch durably; returns ``(stored, duplicates, warnings)`` once it is synced to disk."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._watch(loop)
        stalled = self.stalled_secs()
        if stalled is not None:
            raise StorageError(
                f"the store has finished no commit for {stalled:.0f} s (is another process holding it?); retry later"
            )
        future: asyncio.Future[Outcome] = loop.create_future()
        if not self._waiting:
            self._waiting_since = loop.time()
        self._waiting[self._thread.submit(batch)] = future
        # If this request is cancelled (the client hung up), only its future is: the batch is
        # already in the commit, which goes on for everyone sharing it.
        return await future

    def stalled_secs(self) -> float | None:
        """How long requests have waited with no commit finishing, once that is past
        ``STALLED_COMMIT_SECS``; else ``None``."""
        if self._loop is None or not self._waiting:
            return None
        waited = self._loop.time() - max(self._waiting_since, self._last_finished)
        return waited if waited > STALLED_COMMIT_SECS else None

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._thread.fileno())
        self._loop = loop
        loop.add_reader(self._thread.fileno(), self._collect)

    def _collect(self) -> None:
        # Every request is answered before anything else is done: a failure after this point
        # (counting the commits) must not leave a request waiting for good.
        finished = self._thread.finished()
        if finished and self._loop is not None:
            self._last_finished = self._loop.time()
        committed = [commit for commit in finished if self._answer(commit)]
        if not self._waiting and self._drained is not None:
            self._drained.set()
        for commit in committed:
            metrics.observe_commit(len(commit.tickets), commit.seconds, commit.sync_seconds)

    def _answer(self, finished: FinishedCommit) -> bool:
        """Answer the requests of one commit; whether it stored them."""
        futures = [self._waiting.pop(ticket) for ticket in finished.tickets]
        try:
            outcomes = finished.outcomes()
        except Exception as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return False
        for future, outcome in zip(futures, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)
        return True

    async def close(self, timeout: float | None = None) -> None:
        """Wait for the commits in flight, then stop the commit thread; at most ``timeout``
        seconds in all when given. Requests still waiting then are never answered: nothing
        acknowledged is lost, and a client retries what was not."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if self._waiting:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                log.warning("requests still committing at the shutdown deadline", requests=len(self._waiting))
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._thread.fileno())
        remaining = None if deadline is None else max(0.0, deadline - loop.time())
        if not self._thread.stop(remaining):
            log.warning("the store's commit thread did not stop in time; it is left to finish alone")
