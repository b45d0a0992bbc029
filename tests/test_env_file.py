"""Settings files: ``.env.local``, else ``.env``, read by every command that reads settings as
Hogflare's server read them, beneath the environment; and Hogflare's ``RUST_LOG``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from hogflare.config import ConfigError, Settings
from hogflare.env_file import read_env_file
from tests.conftest import event
from tests.helpers.server import HOGFLARE, Server, free_port, wait_for_rows
from tests.helpers.stream import FakeStream


def hogflare(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("HOGFLARE_", "POSTHOG_"))}
    return subprocess.run([HOGFLARE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_a_deployment_keeps_its_env_local(tmp_path: Path) -> None:
    """The settings in ``.env.local`` hold for the server and for ``hogflare query`` run beside it;
    ``.env`` is not read when ``.env.local`` is there."""
    (tmp_path / ".env.local").write_text(
        "# moved over from Hogflare\n"
        "HOGFLARE_PROJECT_TOKENS=phc_env\n"
        "export POSTHOG_TEAM_ID=42\n"
        'HOGFLARE_DATA_DIR="./data"\n'
    )
    (tmp_path / ".env").write_text("HOGFLARE_STORE=off\n")  # would store nothing, if it were read
    with Server(tmp_path / "data", cwd=tmp_path, env={"HOGFLARE_LOG_LEVEL": "info"}) as running:
        assert (
            httpx.post(f"{running.url}/batch/", json={"api_key": "phc_env", "batch": [event("kept")]}).status_code
            == 200
        )
        refused = httpx.post(f"{running.url}/batch/", json={"api_key": "phc_other", "batch": [event("refused")]})
        assert refused.status_code == 401
        rows = wait_for_rows(running.data_dir, "select event, team_id from events", 1)
        assert "settings read from .env.local" in running.log()
    assert [(row["event"], row["team_id"]) for row in rows] == [("kept", 42)]
    result = hogflare(tmp_path, "query", "--format", "json", "select event, api_key from events")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"event": "kept", "api_key": "phc_env"}]


def test_hogflares_local_recipe_streams_to_the_fake_pipeline(tmp_path: Path, fake: FakeStream) -> None:
    """Hogflare's README runs the server beside a fake pipeline with the streams in `.env.local`."""
    (tmp_path / ".env.local").write_text(
        f"CLOUDFLARE_PIPELINE_ENDPOINT={fake.url}/\n"
        f"CLOUDFLARE_PERSONS_PIPELINE_ENDPOINT={fake.url}/persons\n"
        "CLOUDFLARE_PIPELINE_TIMEOUT_SECS=5\n"
    )
    with Server(tmp_path / "data", cwd=tmp_path) as running:
        sent = event("signed up", uuid=str(uuid.uuid4()), properties={"$set": {"plan": "pro"}})
        assert httpx.post(f"{running.url}/batch/", json={"api_key": "phc_env", "batch": [sent]}).status_code == 200
        [row] = fake.wait_for_events({sent["uuid"]})
    assert (row["event"], row["distinct_id"], row["api_key"]) == ("signed up", "user-1", "phc_env")
    [snapshot] = [found for found in fake.rows() if "operation" in found]
    assert (snapshot["canonical_distinct_id"], snapshot["source_event_uuid"]) == ("user-1", sent["uuid"])


def test_the_environment_wins_over_the_file_and_the_first_line_over_the_next(tmp_path: Path) -> None:
    path = tmp_path / "settings.env"
    path.write_text(
        "POSTHOG_TEAM_ID=42\n"
        "HOGFLARE_PROJECT_TOKENS=phc_empty\n"
        "BASE=lake\n"
        "BASE=sea\n"
        "DIR=${BASE}/data\n"
        'QUOTED="$HOME/$BASE"\n'
        "LITERAL='${BASE}'\n"
        "MISSING=${NOT_SET_ANYWHERE}x\n"
    )
    environ = {"POSTHOG_TEAM_ID": "7", "HOME": "/home/a", "HOGFLARE_PROJECT_TOKENS": ""}
    assert read_env_file(path, environ) == path
    assert environ == {
        "POSTHOG_TEAM_ID": "7",
        "HOME": "/home/a",
        "HOGFLARE_PROJECT_TOKENS": "",
        "BASE": "lake",
        "DIR": "lake/data",
        "QUOTED": "/home/a/lake",
        "LITERAL": "${BASE}",
        "MISSING": "x",
    }
    assert Settings.from_env(environ).team_id == 7


def test_the_server_given_a_file_ships_with_its_settings(tmp_path: Path) -> None:
    """``--env-file`` holds for the workers and for the shipper they start, which does not read
    the default file of the directory (here one that cannot be read) on its own."""
    (tmp_path / ".env.local").write_text("a line that is no setting\n")
    (tmp_path / "production.env").write_text("POSTHOG_TEAM_ID=5\n")
    with Server(tmp_path / "data", cwd=tmp_path, options=("--env-file", "production.env")) as running:
        assert (
            httpx.post(f"{running.url}/batch/", json={"api_key": "phc_env", "batch": [event("kept")]}).status_code
            == 200
        )
        rows = wait_for_rows(running.data_dir, "select event, team_id from events", 1)
    assert [(row["event"], row["team_id"]) for row in rows] == [("kept", 5)]


def test_doctor_says_where_the_settings_came_from(tmp_path: Path) -> None:
    def settings_line() -> str:
        found = re.search(r"^ok +settings {2,}(.+)$", result.stdout, re.MULTILINE)
        assert found is not None, result.stdout
        return found[1]

    result = hogflare(tmp_path, "doctor")
    assert settings_line() == "the environment only"
    (tmp_path / ".env.local").write_text("HOGFLARE_DATA_DIR=lake-here\n")
    result = hogflare(tmp_path, "doctor")
    assert settings_line() == ".env.local read, beneath the environment"
    assert "lake-here does not exist yet" in result.stdout


def test_help_does_not_read_the_file(tmp_path: Path) -> None:
    (tmp_path / ".env.local").write_text("a line that is no setting\n")
    for args in (("--help",), ("serve", "--help"), ("query", "--help"), ("fake-pipeline", "--help")):
        result = hogflare(tmp_path, *args)
        assert (result.returncode, result.stderr) == (0, ""), args
        assert "Usage: hogflare" in result.stdout


def test_env_is_read_when_there_is_no_env_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    environ: dict[str, str] = {}
    assert read_env_file(environ=environ) is None
    (tmp_path / ".env").write_text("POSTHOG_TEAM_ID=9\n")
    assert read_env_file(environ=environ) == Path(".env")
    assert environ == {"POSTHOG_TEAM_ID": "9"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("HOGFLARE_PROJECT_TOKENS\n", "line 1: 'HOGFLARE_PROJECT_TOKENS' is not NAME=value"),
        (
            "POSTHOG_TEAM_ID=42\nHOGFLARE_PROJECT_TOKENS phc_a\n",
            "line 2: 'HOGFLARE_PROJECT_TOKENS phc_a' is not NAME=value",
        ),
        (b"POSTHOG_API_KEY=\xff\n", "cannot be read: it is not UTF-8 text"),
        (None, "no settings file at "),
    ],
)
def test_a_settings_file_that_cannot_be_read_stops_the_command(
    tmp_path: Path, content: str | bytes | None, message: str
) -> None:
    path = tmp_path / "hogflare.env"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    for args in (("serve", "--port", str(free_port())), ("query", "select 1"), ("doctor",)):
        result = hogflare(tmp_path, "--env-file", str(path), *args)
        assert result.returncode == 2
        assert message in result.stderr
        assert "Traceback" not in result.stderr
    with pytest.raises(ConfigError):
        read_env_file(path, {})


@pytest.mark.parametrize(
    ("rust_log", "level"),
    [
        ("debug", "debug"),
        ("warn", "warning"),
        ("tower_http=trace,hogflare=error", "error"),
        ("info,hogflare::persons=trace", "debug"),
        ("hogflare::persons=trace,hogflare=warn", "warning"),
        ("axum=trace", "info"),
        ("off", "critical"),
        ("nonsense", "info"),
    ],
)
def test_rust_log_sets_the_level_when_hogflare_log_level_does_not(rust_log: str, level: str) -> None:
    assert Settings.from_env({"RUST_LOG": rust_log}).log_level == level
    assert Settings.from_env({"RUST_LOG": rust_log, "HOGFLARE_LOG_LEVEL": "warning"}).log_level == "warning"
