"""A data directory copied or moved as files: Iceberg records every data file by its full path,
so a copy's tables are still the original's. A server on the copy would write into the original
and delete what it took for its own leftovers there; every command refuses it instead, and says
what to do."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from hogflare.store import CATALOG_NAME, NAMESPACE, check_lake_place
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


def test_a_catalog_left_mid_commit_by_a_killed_writer_is_still_read(tmp_path: Path) -> None:
    """SQLite rolls back what a killed writer left half-done only through a writable connection;
    the check must not stop a server restarting after a crash (the lake is its own)."""
    lake = tmp_path / "data" / "lake"
    lake.mkdir(parents=True)
    catalog = lake / "catalog.db"
    own = (lake / "warehouse" / "default" / "hogflare_events" / "metadata" / "00001.metadata.json").as_uri()
    with sqlite3.connect(catalog) as connection:
        connection.execute("CREATE TABLE iceberg_tables (catalog_name, table_namespace, metadata_location)")
        connection.execute("INSERT INTO iceberg_tables VALUES (?, ?, ?)", (CATALOG_NAME, NAMESPACE, own))
        connection.execute("CREATE TABLE pad (x)")
        connection.executemany("INSERT INTO pad VALUES (?)", [("p" * 500,)] * 2000)
    killed_mid_commit = (
        "import os, signal, sqlite3\n"
        f"c = sqlite3.connect({str(catalog)!r}, isolation_level=None)\n"
        "c.execute('PRAGMA cache_size=1')\n"  # pages spill to the file before the commit
        "c.execute('BEGIN IMMEDIATE')\n"
        "c.execute(\"UPDATE pad SET x = 'q' || x\")\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", killed_mid_commit], check=False)
    assert catalog.with_name("catalog.db-journal").exists()
    check_lake_place(lake)  # no error: the journal is rolled back, and the tables are the lake's own
