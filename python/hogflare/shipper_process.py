"""The shipper's process: started by a worker (or by hand), it holds the data directory's
shipper lock, ships until asked to stop or until the worker that started it is gone, then makes
a last delivery."""

from __future__ import annotations

import gc
import os
import signal
import threading
from types import FrameType

import structlog

from hogflare.config import Settings
from hogflare.shipper import Shipper
from hogflare.supervisor import acquire_lock, lock_path

log = structlog.get_logger("hogflare.shipper")

_NICENESS = 10
#: How often a signal, or the parent's exit, is acted on.
_WATCH_SECS = 0.1


def serve(settings: Settings, parent: int | None = None) -> int:
    """Run the shipper of a data directory until SIGTERM/SIGINT, or, for one a server's worker
    started (``parent``, known from before the shipper's slow imports), until that worker goes
    away."""
    lock = acquire_lock(lock_path(settings), patience=3.0)
    if lock is None:
        log.info("another shipper holds the lock; exiting")
        return 0
    stop = threading.Event()
    signals: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Only note it: a handler runs between two bytecodes of the main thread, possibly inside
        # Event.set itself, and setting the event again there would wait on a lock it holds.
        signals.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def watch() -> None:
        # When the worker that started us is gone (we are reparented), finish up and exit so
        # the next worker's supervisor starts a fresh shipper under the live server.
        while not stop.wait(_WATCH_SECS):
            if signals or (parent is not None and os.getppid() != parent):
                stop.set()

    threading.Thread(target=watch, name="watch", daemon=True).start()
    # Ingestion answers clients and shipping can catch up: when they compete for the CPU, the
    # workers go first, and the outbox absorbs the difference.
    os.nice(_NICENESS)
    shipper = Shipper(settings)
    # The libraries loaded by now (pyiceberg, SQLAlchemy, pyarrow) leave about a hundred thousand
    # objects that live as long as the process; out of the collector's sight, a full collection
    # takes milliseconds instead of a tenth of a second, every one of which stalls a flush.
    gc.collect()
    gc.freeze()
    log.info("shipper started", data_dir=str(settings.data_dir), pid=os.getpid())
    shipper.run(stop)
    log.info("shipper stopped")
    lock.close()
    return 0
