"""A stand-in for the store's commit thread whose commits finish only when the test says so, as
when another process holds the store's write lock or the disk stops answering."""

from __future__ import annotations

import asyncio
import socket
from types import SimpleNamespace

from hogflare._hogflare import Batch
from hogflare.commit import GroupCommitter, Outcome


class HeldCommits:
    """What is submitted waits until ``release`` answers it as stored, one event each."""

    def __init__(self) -> None:
        self.wake, self._other_end = socket.socketpair()
        self.held: list[int] = []
        self._submitted = 0
        self._released: list[list[int]] = []

    def submit(self, _batch: Batch) -> int:
        self._submitted += 1
        self.held.append(self._submitted)
        return self._submitted

    def fileno(self) -> int:
        return self.wake.fileno()

    def release(self, upto: int | None = None) -> None:
        """Finish one commit holding the requests up to ticket ``upto`` (all, by default)."""
        done = [ticket for ticket in self.held if upto is None or ticket <= upto]
        self.held = [ticket for ticket in self.held if ticket not in done]
        self._released.append(done)
        self._other_end.send(b"x")

    def finished(self) -> list[SimpleNamespace]:
        self.wake.recv(64)
        released, self._released = self._released, []
        return [self._commit(tickets) for tickets in released]

    @staticmethod
    def _commit(tickets: list[int]) -> SimpleNamespace:
        outcomes: list[Outcome] = [(1, 0, {}) for _ in tickets]
        return SimpleNamespace(tickets=tickets, outcomes=lambda: outcomes, seconds=0.0, sync_seconds=0.0)

    def close(self) -> None:
        self.wake.close()
        self._other_end.close()


def swap_thread(committer: GroupCommitter, thread: object) -> object:
    """Put ``thread`` in the place of the committer's commit thread, watched by the running loop
    in its place; returns the one it replaced."""
    loop = asyncio.get_running_loop()
    replaced: object = committer._thread
    if committer._loop is loop:
        loop.remove_reader(committer._thread.fileno())
    committer._thread = thread  # type: ignore[assignment]
    committer._loop = loop
    loop.add_reader(committer._thread.fileno(), committer._collect)
    return replaced
