"""A sink's thread in the shipper: it ships every flush interval, sooner while a backlog lasts,
retries a failure with a backoff, and makes a last delivery bounded by the shutdown timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from hogflare.config import Settings

log = structlog.get_logger("hogflare.shipper")

_POLL_SECS = 0.05
_MAINTENANCE_SECS = 300.0
#: The first upkeep comes sooner: a server restarted every few minutes would otherwise never
#: rewrite the small files its flushes leave.
_FIRST_MAINTENANCE_SECS = 60.0


class ShutdownDeadline:
    """When (``time.monotonic()``) a shipper's last deliveries must end: the shutdown timeout
    counted from the first ask after the stop, the same for every sink, and told once to each
    sink that must stop a request in flight sooner."""

    def __init__(self, timeout_secs: float, tell: list[Callable[[float], None]] | None = None) -> None:
        self.timeout_secs = timeout_secs
        self._tell = tell or []
        self._at: float | None = None
        self._lock = threading.Lock()

    def at(self) -> float:
        with self._lock:
            if self._at is None:
                self._at = time.monotonic() + self.timeout_secs
                for tell in self._tell:
                    tell(self._at)
            return self._at


class SinkLoop(threading.Thread):
    """Ships one sink every flush interval, or sooner when a full chunk is waiting, until ``stop``;
    then ships what is left until the shutdown deadline."""

    def __init__(
        self,
        sink: str,
        ship: Callable[[], int],
        pending: Callable[[], int],
        settings: Settings,
        stop: threading.Event,
        *,
        shutdown: ShutdownDeadline | None = None,
    ) -> None:
        super().__init__(name=f"ship-{sink}", daemon=True)
        self.sink = sink
        self.ship = ship
        self.pending = pending
        self.settings = settings
        self.stop = stop
        self.maintain: Callable[[], None] | None = None
        self.shutdown = shutdown or ShutdownDeadline(settings.shutdown_timeout_secs)

    def run(self) -> None:
        last_flush = time.monotonic()
        last_maintenance = last_flush - _MAINTENANCE_SECS + _FIRST_MAINTENANCE_SECS
        backoff = 0.5
        # A flush goes on while chunks come back full: a chunk is capped in bytes too, and waiting a
        # whole interval between chunks of wide rows would let the backlog pile up. Rows that
        # arrive after the backlog is gone wait for the next interval, to be shipped together.
        flushing = False
        while not self.stop.is_set():
            try:
                if self.maintain is not None and time.monotonic() - last_maintenance >= _MAINTENANCE_SECS:
                    last_maintenance = time.monotonic()
                    self.maintain()
                waiting = self.pending()
                now = time.monotonic()
                if waiting and (
                    flushing
                    or waiting >= self.settings.flush_rows
                    or now - last_flush >= self.settings.flush_interval_secs
                ):
                    shipped = self.ship()
                    last_flush = time.monotonic()
                    flushing = 0 < shipped < waiting
                    if shipped:
                        continue
                if waiting == 0:
                    last_flush = now
                    flushing = False
                backoff = 0.5
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:
                # BaseException too: a panic in the extension arrives as one (pyo3's
                # PanicException), and a sink whose thread ended would stop shipping for good.
                log.exception("shipping failed; will retry", sink=self.sink, retry_in_secs=backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            self.stop.wait(_POLL_SECS)
        self.last_delivery()

    def last_delivery(self) -> None:
        # A chunk already being shipped when the deadline passes finishes; none is started after.
        deadline = self.shutdown.at()
        shipped = 0
        try:
            while time.monotonic() < deadline and (entries := self.ship()):
                shipped += entries
            left = self.pending()
        except Exception:
            log.exception("final flush failed; rows stay in the outbox for the next start", sink=self.sink)
            return
        if not left:
            log.info("final flush done", sink=self.sink, entries=shipped)
        elif time.monotonic() >= deadline:
            log.warning(
                "shutdown deadline reached; rows stay in the outbox for the next start", sink=self.sink, left=left
            )
        else:
            log.warning(
                "sink is waiting out a failure; rows stay in the outbox for the next start", sink=self.sink, left=left
            )
