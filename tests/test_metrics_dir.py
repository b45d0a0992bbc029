"""Where a server keeps its metrics files: in shared memory, off the data directory's disk, so
a full disk cannot kill a worker writing a count through the files' memory map."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hogflare.metrics_dir import SHARED_MEMORY, fresh_metrics_dir, metrics_root, remove_metrics_dir


def test_metrics_live_in_shared_memory_apart_for_each_data_directory(tmp_path: Path) -> None:
    shared = tmp_path / "shm"
    shared.mkdir()
    first = metrics_root(tmp_path / "one", shared)
    second = metrics_root(tmp_path / "two", shared)
    assert first.is_relative_to(shared)
    assert second.is_relative_to(shared)
    assert first != second
    assert metrics_root(tmp_path / "one", shared) == first, "the same data directory, the same place"
    assert (first.parent.stat().st_mode & 0o777) == 0o700


def test_a_name_taken_by_a_link_is_not_followed(tmp_path: Path) -> None:
    shared = tmp_path / "shm"
    shared.mkdir()
    data_dir = tmp_path / "data"
    home = metrics_root(data_dir, shared).parent
    home.rmdir()
    (tmp_path / "elsewhere").mkdir()
    home.symlink_to(tmp_path / "elsewhere")
    assert metrics_root(data_dir, shared) == data_dir / "metrics"


def test_without_shared_memory_the_data_directory_holds_them(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert metrics_root(data_dir, tmp_path / "no such directory") == data_dir / "metrics"


def test_a_fresh_start_clears_what_stopped_servers_left(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    earlier = data_dir / "metrics"
    (earlier / "999999999").mkdir(parents=True)  # a server long gone, from before shared memory
    fresh = fresh_metrics_dir(data_dir)
    try:
        assert fresh.name == str(os.getpid())
        assert list(fresh.iterdir()) == []
        if fresh.is_relative_to(data_dir):
            return  # no shared memory on this machine: the old place is the place
        assert not earlier.exists()
        # A running server's files (its pid alive) are left where they are.
        (earlier / str(os.getppid())).mkdir(parents=True)
        assert fresh_metrics_dir(data_dir) == fresh
        assert (earlier / str(os.getppid())).is_dir()
    finally:
        remove_metrics_dir(fresh)
    assert not fresh.parent.parent.exists(), "nothing left in shared memory"


def test_a_start_clears_what_killed_servers_left_on_other_data_directories(tmp_path: Path) -> None:
    other = SHARED_MEMORY / f"hogflare-test-{os.getpid()}" / "metrics"
    killed, running = other / "999999999", other / str(os.getppid())
    killed.mkdir(parents=True)
    (killed / "counter_999999999.db").write_bytes(b"\0" * 4096)
    running.mkdir()
    try:
        fresh = fresh_metrics_dir(tmp_path / "data")
        remove_metrics_dir(fresh)
        if not fresh.is_relative_to(SHARED_MEMORY):
            return  # no shared memory here: nothing of other servers' to clear
        assert not killed.exists()
        assert running.is_dir()
    finally:
        shutil.rmtree(other.parent)
