"""The group committer on its own: requests that wait together share commits, each gets its own
outcome, a full outbox fails only the commit it hits, and closing waits for what is in flight
for as long as it is allowed to."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from hogflare import commit as commit_module
from hogflare._hogflare import Batch, Decoder, OutboxFullError, StorageError, Store
from hogflare.commit import GroupCommitter, Outcome
from tests.conftest import TOKEN
from tests.helpers.held_commits import HeldCommits, swap_thread

DECODER = Decoder(max_inflated_bytes=1 << 20, max_event_bytes=1 << 20)


def batch(*uuids: str) -> Batch:
    # Personless, so that each event is one outbox row.
    properties = {"$process_person_profile": False}
    events = [{"event": "e", "distinct_id": "d", "uuid": u, "properties": properties} for u in uuids]
    return DECODER.decode("event", json.dumps({"api_key": TOKEN, "batch": events}).encode())


def committer(path: Path, max_outbox_bytes: int = 1 << 40) -> tuple[Store, GroupCommitter]:
    store = Store(str(path))
    return store, GroupCommitter(store, dedupe_window_days=7, max_outbox_bytes=max_outbox_bytes)


async def test_concurrent_requests_each_get_their_own_outcome(tmp_path: Path) -> None:
    store, commits = committer(tmp_path)
    repeated = str(uuid.uuid4())
    fresh = [[str(uuid.uuid4()) for _ in range(n % 3 + 1)] for n in range(200)]
    outcomes = await asyncio.gather(
        commits.commit(batch(repeated)),
        *(commits.commit(batch(*uuids)) for uuids in fresh),
    )
    # A uuid sent again later is a duplicate, whichever commit it joins.
    again = await commits.commit(batch(repeated, str(uuid.uuid4())))
    await commits.close()

    assert outcomes[0] == (1, 0, {})
    assert [stored for stored, _, _ in outcomes[1:]] == [len(uuids) for uuids in fresh]
    assert again == (1, 1, {})
    _, rows, _ = store.outbox_state()
    assert rows == 1 + sum(map(len, fresh)) + 1


async def test_a_full_outbox_refuses_the_commit_it_hits_and_no_other(tmp_path: Path) -> None:
    store, commits = committer(tmp_path, max_outbox_bytes=0)
    assert await commits.commit(batch(str(uuid.uuid4()))) == (1, 0, {})
    with pytest.raises(OutboxFullError):
        await commits.commit(batch(str(uuid.uuid4())))
    await commits.close()
    assert store.outbox_state()[1] == 1


async def test_a_cancelled_request_does_not_hold_up_the_others(tmp_path: Path) -> None:
    store, commits = committer(tmp_path)
    waiting = [asyncio.ensure_future(commits.commit(batch(str(uuid.uuid4())))) for _ in range(20)]
    await asyncio.sleep(0)
    waiting[0].cancel()
    results = await asyncio.gather(*waiting[1:])
    await commits.close()
    assert results == [(1, 0, {})] * 19
    # The cancelled request's batch had been handed over: it is stored all the same.
    assert store.outbox_state()[1] == 20


async def test_closing_waits_for_commits_in_flight_and_then_refuses(tmp_path: Path) -> None:
    store, commits = committer(tmp_path)
    waiting = [asyncio.ensure_future(commits.commit(batch(str(uuid.uuid4())))) for _ in range(50)]
    await asyncio.sleep(0)
    await commits.close()
    assert all(task.done() for task in waiting)
    assert store.outbox_state()[1] == 50
    with pytest.raises(StorageError, match="stopped"):
        await commits.commit(batch(str(uuid.uuid4())))


async def test_requests_are_answered_even_when_counting_their_commit_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit's metrics come after its answers: a metrics failure (a full disk under the
    counters' files) is logged by the loop, and no request waits for an answer that never comes."""

    def broken(*_: object) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr("hogflare.metrics.observe_commit", broken)
    loop = asyncio.get_running_loop()
    reported: list[BaseException | None] = []
    loop.set_exception_handler(lambda _, context: reported.append(context.get("exception")))
    _, commits = committer(tmp_path)
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(commits.commit(batch(str(uuid.uuid4()))) for _ in range(20))), timeout=10
    )
    await asyncio.wait_for(commits.close(), timeout=10)
    assert outcomes == [(1, 0, {})] * 20
    assert reported
    assert all(isinstance(exc, OSError) for exc in reported)


class StandInCommitThread:
    """A commit thread whose commits never finish, as when another process holds the store and
    does not let go; its stop records the time it is given and says it ended when ``stops``."""

    def __init__(self, *, stops: bool = False) -> None:
        self.wake, self._other_end = socket.socketpair()
        self.stopped_within: list[float | None] = []
        self.stops = stops
        self.submitted = 0

    def submit(self, _batch: Batch) -> int:
        self.submitted += 1
        return self.submitted

    def fileno(self) -> int:
        return self.wake.fileno()

    def finished(self) -> list[object]:
        return []

    def stop(self, timeout: float | None = None) -> bool:
        self.stopped_within.append(timeout)
        return self.stops

    def close(self) -> None:
        self.wake.close()
        self._other_end.close()


async def test_closing_gives_up_at_its_deadline_on_a_commit_that_never_finishes(tmp_path: Path) -> None:
    _, commits = committer(tmp_path)
    real = commits._thread
    stuck = StandInCommitThread()
    commits._thread = stuck  # type: ignore[assignment]
    waiting = asyncio.ensure_future(commits.commit(batch(str(uuid.uuid4()))))
    await asyncio.sleep(0)
    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(commits.close(0.2), timeout=10)
    events = [entry["event"] for entry in logs]
    assert events == [
        "requests still committing at the shutdown deadline",
        "the store's commit thread did not stop in time; it is left to finish alone",
    ]
    assert logs[0]["requests"] == 1
    # The thread is asked to stop within what is left of the deadline (nothing), not waited for
    # again.
    [within] = stuck.stopped_within
    assert within is not None
    assert within < 0.05
    assert not waiting.done()
    waiting.cancel()
    real.stop()
    stuck.close()


async def test_closing_with_nothing_in_flight_gives_the_thread_the_whole_deadline(tmp_path: Path) -> None:
    _, commits = committer(tmp_path)
    real = commits._thread
    idle = StandInCommitThread(stops=True)
    commits._thread = idle  # type: ignore[assignment]
    with structlog.testing.capture_logs() as logs:
        await commits.close(5.0)
    assert logs == []
    [within] = idle.stopped_within
    assert within is not None
    assert 4.5 < within <= 5.0
    real.stop()
    idle.close()


@pytest.fixture
async def held(tmp_path: Path) -> AsyncIterator[tuple[GroupCommitter, HeldCommits]]:
    """A committer whose commits finish only when the test releases them."""
    _, commits = committer(tmp_path)
    thread = HeldCommits()
    real = swap_thread(commits, thread)
    yield commits, thread
    swap_thread(commits, real)
    await commits.close()
    thread.close()


def submitted(commits: GroupCommitter) -> asyncio.Future[Outcome]:
    return asyncio.ensure_future(commits.commit(batch(str(uuid.uuid4()))))


async def test_new_requests_are_refused_while_no_commit_finishes(
    held: tuple[GroupCommitter, HeldCommits], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commit_module, "STALLED_COMMIT_SECS", 0.05)
    commits, thread = held
    waiting = submitted(commits)
    await asyncio.sleep(0)
    # Within the allowance a request still joins the queue.
    joined = submitted(commits)
    await asyncio.sleep(0.1)
    assert not joined.done()
    with pytest.raises(StorageError, match="has finished no commit for"):
        await commits.commit(batch(str(uuid.uuid4())))
    stalled = commits.stalled_secs()
    assert stalled is not None
    assert stalled > 0.05
    # Those already waiting are answered when their commit finishes; then requests are taken.
    thread.release()
    assert list(await asyncio.wait_for(asyncio.gather(waiting, joined), 5)) == [(1, 0, {})] * 2
    assert commits.stalled_secs() is None
    later = submitted(commits)
    await asyncio.sleep(0)
    thread.release()
    assert await asyncio.wait_for(later, 5) == (1, 0, {})


async def test_commits_that_finish_are_never_called_stalled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A request answered long ago is no longer waiting: only the oldest unanswered one counts.
    monkeypatch.setattr(commit_module, "STALLED_COMMIT_SECS", 0.05)
    _, commits = committer(tmp_path)
    assert await commits.commit(batch(str(uuid.uuid4()))) == (1, 0, {})
    await asyncio.sleep(0.1)
    assert commits.stalled_secs() is None
    assert await commits.commit(batch(str(uuid.uuid4()))) == (1, 0, {})
    await commits.close()


async def test_slow_commits_that_still_finish_are_not_called_stalled(
    held: tuple[GroupCommitter, HeldCommits], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A request waits through the commit under way and the one it joins: it may be older than
    # the allowance while commits keep finishing within it, and then nothing is refused.
    monkeypatch.setattr(commit_module, "STALLED_COMMIT_SECS", 0.15)
    commits, thread = held
    earlier, joining = submitted(commits), submitted(commits)
    await asyncio.sleep(0.1)
    thread.release(upto=1)
    assert await asyncio.wait_for(earlier, 5) == (1, 0, {})
    await asyncio.sleep(0.1)
    # `joining` has waited 0.2 s, but a commit finished 0.1 s ago.
    assert commits.stalled_secs() is None
    later = submitted(commits)
    await asyncio.sleep(0)
    thread.release()
    assert list(await asyncio.wait_for(asyncio.gather(joining, later), 5)) == [(1, 0, {})] * 2
