"""Keeping exactly one shipper per data directory alive, without importing the shipper itself.

The shipper holds ``<data_dir>/shipper.lock`` for as long as it runs. Server workers check the lock
and start a shipper when nobody holds it, so any number of workers, or a restart after a crash,
ends with exactly one. A shipper process first takes ``shipper.starting.lock``, before loading the
libraries it runs on, so that the others started alongside it exit without loading them.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import structlog

from hogflare.config import Settings

log = structlog.get_logger("hogflare.supervisor")

LOCK_NAME = "shipper.lock"
#: Held from a shipper process's first moment, before it has loaded what it needs to run.
STARTING_LOCK_NAME = "shipper.starting.lock"


def lock_path(settings: Settings) -> Path:
    return settings.data_dir / LOCK_NAME


def starting_lock_path(settings: Settings) -> Path:
    return settings.data_dir / STARTING_LOCK_NAME


def shipper_alive(settings: Settings) -> bool:
    """Whether some process holds the shipper lock of this data directory."""
    path = lock_path(settings)
    if not path.exists():
        return False
    # Read only: a lock is taken through any descriptor, and a data directory that has become
    # read-only (or another user's) must not stop the question being answered.
    with path.open("r") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def acquire_lock(path: Path, patience: float) -> IO[str] | None:
    """Take the lock, waiting out a worker's momentary liveness check; None if a shipper has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a")
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                return None
            time.sleep(0.05)
        else:
            return handle


#: The pid of the worker that started a shipper: the shipper exits when that process is gone,
#: even if it was gone before the shipper could ask for its parent.
PARENT_ENV = "HOGFLARE_SHIPPER_PARENT"


def spawn(settings: Settings) -> subprocess.Popen[bytes]:
    """Start a shipper process for these settings."""
    env = {**os.environ, **settings.to_env(), PARENT_ENV: str(os.getpid())}
    return subprocess.Popen([sys.executable, "-m", "hogflare", "ship"], env=env)


def parent_of_shipper() -> int | None:
    """The worker that started this shipper; ``None`` for one started by hand (``hogflare
    ship``), which runs until it is stopped, whatever becomes of the shell that started it."""
    given = os.environ.get(PARENT_ENV, "")
    return int(given) if given.isdigit() else None


#: The pid of ``hogflare serve``'s main process, for its workers.
SERVER_ENV = "HOGFLARE_SERVER_PID"
#: How often a worker looks for its server's main process.
_ORPHAN_CHECK_SECS = 1.0


def stop_when_orphaned() -> None:
    """In a worker of ``hogflare serve``: stop as the server stops it (SIGTERM) once its main
    process is gone. Killed outright (SIGKILL, the OOM killer), the main process leaves its workers
    serving on the port, where a server started again cannot listen. Nothing happens in a process
    that is not such a worker (an app served by hand, or in process)."""
    given = os.environ.get(SERVER_ENV, "")
    server = int(given) if given.isdigit() else None
    if server is None:
        return
    if os.getppid() != server:
        # Gone before this worker started: stop now. (Alive, it is not this process's parent:
        # not a worker of it.)
        try:
            os.kill(server, 0)
        except ProcessLookupError:
            _stop_orphaned(server)
        except PermissionError:
            pass  # alive, another user's
        return

    def watch() -> None:
        while os.getppid() == server:
            time.sleep(_ORPHAN_CHECK_SECS)
        _stop_orphaned(server)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def _stop_orphaned(server: int) -> None:
    log.warning("the server's main process is gone: this worker stops", server_pid=server)
    os.kill(os.getpid(), signal.SIGTERM)
