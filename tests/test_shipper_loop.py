"""How a sink's loop paces its flushes: a backlog bigger than one chunk ships chunk after chunk,
while rows that trickle in afterwards wait for the flush interval, to be shipped together."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from hogflare.sink_loop import ShutdownDeadline, SinkLoop
from tests.conftest import make_settings


class FakeSink:
    """A backlog the loop ships at most ``chunk`` entries at a time."""

    def __init__(self, backlog: int, chunk: int) -> None:
        self.backlog = backlog
        self.chunk = chunk
        self.shipments: list[int] = []

    def ship(self) -> int:
        taken = min(self.backlog, self.chunk)
        self.backlog -= taken
        self.shipments.append(taken)
        return taken

    def pending(self) -> int:
        return self.backlog


def test_a_backlog_ships_chunk_after_chunk_and_a_trickle_waits(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, flush_rows=1_000, flush_interval_secs=3_600.0)
    sink = FakeSink(backlog=1_500, chunk=10)  # one flush's worth, in chunks capped far below it
    stop = threading.Event()
    loop = SinkLoop("lake", sink.ship, sink.pending, settings, stop)
    loop.start()
    try:
        deadline = time.monotonic() + 10
        while sink.backlog and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sink.backlog == 0, "the whole backlog shipped without waiting an interval between chunks"
        shipped = len(sink.shipments)
        sink.backlog = 3
        time.sleep(0.5)
        assert sink.backlog == 3, "a trickle after the backlog waits for the interval"
        assert len(sink.shipments) == shipped
    finally:
        stop.set()
        loop.join(10)
    assert sink.backlog == 0, "the last delivery on stop ships the trickle"


class PanicLike(BaseException):
    """What a panic in the extension raises: not an ``Exception``."""


def test_a_panic_while_shipping_is_retried_and_does_not_end_the_sink(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, flush_rows=10, flush_interval_secs=0.01)
    sink = FakeSink(backlog=25, chunk=10)
    ship = sink.ship
    failures = 0

    def panics_once() -> int:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise PanicLike("called `Option::unwrap()` on a `None` value")
        return ship()

    stop = threading.Event()
    loop = SinkLoop("lake", panics_once, sink.pending, settings, stop)
    loop.start()
    try:
        deadline = time.monotonic() + 10
        while sink.backlog and time.monotonic() < deadline:
            time.sleep(0.01)
        assert loop.is_alive()
        assert failures == 1
        assert sink.backlog == 0
    finally:
        stop.set()
        loop.join(10)


def test_the_upkeep_runs_a_minute_after_start_then_every_five(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server restarted every few minutes still gets its upkeep (the small files' rewrites
    among it): the first comes a minute after the loop starts."""
    clock = [1_000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    settings = make_settings(tmp_path, flush_interval_secs=3_600.0)
    sink = FakeSink(backlog=0, chunk=10)
    stop = threading.Event()
    upkeeps: list[float] = []
    loop = SinkLoop("lake", sink.ship, sink.pending, settings, stop)
    loop.maintain = lambda: upkeeps.append(clock[0])
    loop.start()
    try:
        for now in (1_059.0, 1_060.0, 1_300.0, 1_359.0, 1_360.0):
            clock[0] = now
            time.sleep(0.3)  # several turns of the loop
        assert upkeeps == [1_060.0, 1_360.0]
    finally:
        stop.set()
        loop.join(10)


def test_every_sink_shares_one_deadline_counted_from_the_first_ask(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two sinks finishing their last chunks at different moments still stop at the same time,
    and a sink that must cut a request short hears of it once."""
    clock = [500.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    told: list[float] = []
    shutdown = ShutdownDeadline(30.0, [told.append])
    assert shutdown.at() == 530.0
    clock[0] = 512.0
    assert shutdown.at() == 530.0
    assert told == [530.0]
