"""Where a server's metrics files live: prometheus-client's multiprocess mode keeps each
process's counts in files that every worker and the shipper write and ``/metrics`` reads.

Not ``hogflare.metrics``: prometheus-client picks its storage when imported, so the server's
first process must choose the directory before anything imports it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
from pathlib import Path

#: Memory the kernel shares between processes; on Linux, always there.
SHARED_MEMORY = Path("/dev/shm")  # noqa: S108 - a directory of our own is made in it, checked below


def metrics_root(data_dir: Path, shared_memory: Path = SHARED_MEMORY, *, create: bool = True) -> Path:
    """Where a data directory's servers keep their metrics files: in shared memory when the
    machine has it, else ``<data_dir>/metrics``; without ``create``, where a reader (``hogflare
    doctor``, perhaps as another user) finds them. prometheus-client writes them through a
    memory map, so on a full disk a worker's first new count (a 503, say) would kill it with
    SIGBUS, and the server with it once its workers kept dying; the disk must fill without that."""
    fallback = data_dir / "metrics"
    if not (shared_memory.is_dir() and os.access(shared_memory, os.W_OK | os.X_OK)):
        return fallback
    key = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    home = shared_memory / f"hogflare-{key}"
    if not create:
        return home / "metrics" if home.is_dir() and not home.is_symlink() else fallback
    try:
        home.mkdir(mode=0o700, exist_ok=True)
        made = home.lstat()
    except OSError:
        return fallback
    # Another user's directory (or link) of that name is not ours to write in.
    if not stat.S_ISDIR(made.st_mode) or made.st_uid != os.getuid():
        return fallback
    return home / "metrics"


def fresh_metrics_dir(data_dir: Path) -> Path:
    """An empty ``<metrics root>/<pid>`` for the counters this server's workers and shipper
    share (see ``hogflare.metrics``, not imported here: prometheus-client picks its storage on
    import, and the workers inherit this process's modules). Counts of a previous run are not
    carried over (Prometheus reads a counter that starts again from zero as a restart), and those
    of another server running on the same data directory are left alone."""
    root = metrics_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    _clear_stopped_elsewhere(root)
    earlier = data_dir / "metrics"  # where versions before kept them, and the fallback
    if root != earlier and earlier.is_dir() and not any(_running_dir(entry) for entry in earlier.iterdir()):
        shutil.rmtree(earlier, ignore_errors=True)
    # With the counters of a version that kept them in the root.
    _remove_stopped(root, strays=True)
    path = root / str(os.getpid())
    path.mkdir()
    return path


def _clear_stopped_elsewhere(root: Path) -> None:
    """Remove the files of this user's servers that stopped without removing theirs (killed) on
    other data directories: in shared memory they would stay until the machine restarts. Their
    directories stay, empty, lest a server starting there now lose the one it just made."""
    if root.parent.parent != SHARED_MEMORY:
        return
    for home in SHARED_MEMORY.glob("hogflare-*/metrics"):
        if home == root or home.parent.is_symlink() or home.parent.stat().st_uid != os.getuid():
            continue
        _remove_stopped(home, strays=False)


def _remove_stopped(root: Path, *, strays: bool) -> None:
    """Remove the metrics directories in ``root`` of servers no longer running; with ``strays``,
    whatever else it holds too."""
    with contextlib.suppress(OSError):
        for entry in root.iterdir():
            if _running_dir(entry):
                continue
            if entry.is_dir() and (strays or entry.name.isdigit()):
                shutil.rmtree(entry, ignore_errors=True)
            elif strays:
                entry.unlink(missing_ok=True)


def remove_metrics_dir(path: Path) -> None:
    """Remove a stopped server's metrics files, and the directories above them once empty: in
    shared memory they would outlive the server, in RAM, until the next start."""
    shutil.rmtree(path, ignore_errors=True)
    root = path.parent
    # The data directory, when it holds them, stays whatever it holds.
    for parent in (root, root.parent) if root.parent.parent == SHARED_MEMORY else (root,):
        try:
            parent.rmdir()
        except OSError:
            return  # another server's files are there


def servers_running(data_dir: Path) -> list[int]:
    """The pids of the servers running on ``data_dir``, as their metrics directories tell."""
    root = metrics_root(data_dir, create=False)
    if not root.is_dir():
        return []
    return sorted(int(entry.name) for entry in root.iterdir() if _running_dir(entry))


def _running_dir(entry: Path) -> bool:
    """Whether ``entry`` is the metrics directory of a server still running."""
    return entry.is_dir() and entry.name.isdigit() and _running(int(entry.name))


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a pid left from before a restart, now this process's own
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
