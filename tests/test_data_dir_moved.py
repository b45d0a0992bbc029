"""A data directory copied or moved as files: Iceberg records every data file by its full path,
so a copy's tables are still the original's. A server on the copy would write into the original
and delete what it took for its own leftovers there; every command refuses it instead, and says
what to do."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.server import HOGFLARE, Server, free_port, query, wait_for_rows
from tests.test_doctor import doctor, send

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """A data directory whose lake holds rows, its server stopped."""
    data = tmp_path / "first" / "data"
    with Server(data) as server:
        assert send(server, 5).status_code == 200
        wait_for_rows(data, "select uuid from events", 5)
    return data


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HOGFLARE, *args], capture_output=True, text=True, timeout=120, check=False)


def test_a_copy_is_refused_by_every_command_and_the_original_is_untouched(shipped: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy" / "data"
    shutil.copytree(shipped, copy, symlinks=True)
    before = sorted(path.name for path in (shipped / "lake").rglob("*") if path.is_file())
    for command in (
        ["query", "--data-dir", str(copy), "select count(*) from events"],
        ["compact", "--data-dir", str(copy)],
        ["serve", "--data-dir", str(copy), "--port", str(free_port())],
        ["ship", "--data-dir", str(copy)],
    ):
        result = run(*command)
        assert result.returncode == 2, (command, result.stderr)
        assert f"was made in {shipped / 'lake'}" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    code, findings = doctor(copy)
    assert code == 1
    assert any(level == "problem" and "was made in" in message for level, message in findings["lake"])
    assert sorted(path.name for path in (shipped / "lake").rglob("*") if path.is_file()) == before
    assert len(query(shipped, "select uuid from events")) == 5


def test_a_move_is_refused_until_a_link_names_the_old_place(shipped: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved" / "data"
    moved.parent.mkdir()
    shipped.rename(moved)
    result = run("query", "--data-dir", str(moved), "select count(*) from events")
    assert result.returncode == 2
    assert "a symbolic link from there to here will do" in result.stderr
    code, findings = doctor(moved)
    assert code == 1
    assert "Traceback" not in str(findings)
    # The old path leads to the new one: the tables' paths reach the files again.
    shipped.symlink_to(moved)
    assert len(query(moved, "select uuid from events")) == 5
    with Server(moved) as server:
        assert send(server, 3).status_code == 200
        wait_for_rows(moved, "select uuid from events", 8)
