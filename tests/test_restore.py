"""Restoring the store from a backup older than the lake: the events the server takes afterwards
still reach the lake, once each."""

from __future__ import annotations

import shutil
import sqlite3
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.helpers.server import Server, query, wait_for_rows
from tests.test_doctor import doctor

pytestmark = [pytest.mark.server, pytest.mark.slow]

TOKEN = "phc_restore"


def send(server: Server, label: str) -> list[str]:
    """Three events of one person with ``$set``, so both tables get rows; returns their uuids."""
    uuids = [str(uuid.uuid4()) for _ in range(3)]
    batch = [
        {"event": label, "distinct_id": "restored-user", "uuid": u, "properties": {"$set": {"last": label}}}
        for u in uuids
    ]
    response = httpx.post(f"{server.url}/batch/", json={"api_key": TOKEN, "batch": batch}, timeout=10)
    assert response.status_code == 200, response.text
    return uuids


def test_a_store_restored_from_an_older_backup_ships_the_events_it_takes_next(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    sent: list[str] = []
    with Server(data_dir) as server:
        sent += send(server, "before-backup")
        assert len(wait_for_rows(data_dir, "SELECT uuid FROM events", 3)) == 3
    backup = tmp_path / "store-backup"
    shutil.copytree(data_dir / "store", backup)

    with Server(data_dir) as server:
        sent += send(server, "after-backup")
        assert len(wait_for_rows(data_dir, "SELECT uuid FROM events", 6)) == 6

    shutil.rmtree(data_dir / "store")
    shutil.copytree(backup, data_dir / "store")
    code, findings = doctor(data_dir)
    assert code == 0
    assert any(level == "warning" and "restored from an older backup" in text for level, text in findings["outbox"])
    with Server(data_dir) as server:
        sent += send(server, "after-restore")
        rows = wait_for_rows(data_dir, "SELECT uuid FROM events", 9)
        assert "behind the lake" in server.log()

    assert sorted(row["uuid"] for row in rows) == sorted(sent)
    assert not any(level == "warning" for level, _ in doctor(data_dir)[1]["outbox"])
    # The restored person is the backup's, updated by the events it took since.
    latest = query(data_dir, "SELECT properties FROM persons ORDER BY updated_at DESC, version DESC LIMIT 1")
    assert '"last":"after-restore"' in latest[0]["properties"].replace(" ", "")


def test_restored_while_the_lake_cannot_be_read_at_startup_loses_nothing(tmp_path: Path) -> None:
    """The server cannot compare the restored store with the lake as it starts (a table's
    metadata unreadable for a moment): it takes events all the same, and once the shipper can
    read the lake it ships them rather than take them for rows the lake already has."""
    data_dir = tmp_path / "data"
    sent: list[str] = []
    with Server(data_dir) as server:
        sent += send(server, "before-backup")
        wait_for_rows(data_dir, "SELECT uuid FROM events", 3)
    backup = tmp_path / "store-backup"
    shutil.copytree(data_dir / "store", backup)
    with Server(data_dir) as server:
        sent += send(server, "after-backup")
        wait_for_rows(data_dir, "SELECT uuid FROM events", 6)
    shutil.rmtree(data_dir / "store")
    shutil.copytree(backup, data_dir / "store")

    with sqlite3.connect(data_dir / "lake" / "catalog.db") as catalog:
        [(location,)] = catalog.execute(
            "SELECT metadata_location FROM iceberg_tables WHERE table_name = 'hogflare_events'"
        ).fetchall()
    metadata = Path(location.removeprefix("file://"))
    aside = metadata.with_name(metadata.name + ".aside")
    metadata.rename(aside)
    with Server(data_dir) as server:
        deadline = time.monotonic() + 30
        while "cannot compare the store's outbox with the lake" not in server.log():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        sent += send(server, "after-restore")
        aside.rename(metadata)
        rows = wait_for_rows(data_dir, "SELECT uuid FROM events", 9, timeout=60)
        assert sorted(row["uuid"] for row in rows) == sorted(sent)
        assert "the lake could not be read then" in server.log()
    with Server(data_dir) as server:  # and a later start neither ships them again nor skips new ones
        sent += send(server, "later")
        rows = wait_for_rows(data_dir, "SELECT uuid FROM events", 12)
    assert sorted(row["uuid"] for row in rows) == sorted(sent)
