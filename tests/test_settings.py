"""Settings a server cannot use stop it at startup, with the variable's name in the message."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from hogflare.config import ConfigError, Settings
from hogflare.metrics_dir import SHARED_MEMORY
from tests.conftest import event
from tests.helpers.server import HOGFLARE, Server


def serve(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``hogflare serve`` with ``args`` and ``env`` added to the environment, expected to stop at once."""
    return subprocess.run(
        [HOGFLARE, "serve", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HOGFLARE_SIGNATURE_TOLERANCE_SECS", "-1"),
        ("HOGFLARE_FLUSH_INTERVAL_SECS", "-0.5"),
        ("HOGFLARE_SHUTDOWN_TIMEOUT_SECS", "soon"),
        ("HOGFLARE_BODY_TIMEOUT_SECS", "0"),
        ("CLOUDFLARE_PIPELINE_TIMEOUT_SECS", "-3"),
        ("HOGFLARE_OUTBOX_MAX_BYTES", "-1"),
        ("HOGFLARE_FLUSH_ROWS", "0"),
        ("HOGFLARE_MAX_BODY_BYTES", "-20"),
        ("HOGFLARE_BODY_DEADLINE_SECS", "0"),
        ("HOGFLARE_PIPELINE_CONCURRENCY", "0"),
        ("HOGFLARE_PIPELINE_CONCURRENCY", "1000"),
        ("HOGFLARE_SHUTDOWN_TIMEOUT_SECS", "inf"),
        ("HOGFLARE_FLUSH_INTERVAL_SECS", "nan"),
        ("HOGFLARE_LOG_LEVEL", "verbose"),
        # Checked here, not only by each worker as it starts (which Granian would restart forever).
        ("HOGFLARE_TRUSTED_PROXIES", "10.0.0.0/8,not-a-network"),
        # Values the store, Granian or a thread's wait would fail on only once the server runs.
        ("POSTHOG_TEAM_ID", "99999999999999999999"),
        ("POSTHOG_TEAM_ID", "-5"),
        ("HOGFLARE_FLUSH_ROWS", "99999999999999999999"),
        ("HOGFLARE_MAX_EVENT_BYTES", "99999999999999999999"),
        ("HOGFLARE_SHUTDOWN_TIMEOUT_SECS", "1e9"),
        ("HOGFLARE_LMDB_MAP_SIZE", "4096"),
        ("HOGFLARE_LMDB_MAP_SIZE", str(1 << 50)),
        ("HOGFLARE_DEDUPE_WINDOW_DAYS", "5000000000"),
        ("HOGFLARE_MAX_BODY_BYTES", str(1 << 62)),
        # A list that lost its entries must not quietly allow every token.
        ("HOGFLARE_PROJECT_TOKENS", ","),
        ("HOGFLARE_TRUSTED_PROXIES", " , "),
        # Person snapshots stream only beside the events.
        ("CLOUDFLARE_PERSONS_PIPELINE_ENDPOINT", "http://127.0.0.1:9/persons"),
        # A stream that could never be reached would only fill the outbox.
        ("CLOUDFLARE_PIPELINE_ENDPOINT", "notaurl"),
        ("CLOUDFLARE_PIPELINE_ENDPOINT", "ftp://pipelines.example/x"),
        ("CLOUDFLARE_PIPELINE_ENDPOINT", "https://"),
        ("CLOUDFLARE_PIPELINE_ENDPOINT", "http://[::1"),
        ("POSTHOG_GROUP_TYPE_5", "team"),
    ],
)
def test_serve_refuses_a_bad_setting_by_name(tmp_path: Path, variable: str, value: str) -> None:
    result = serve("--port", "1", "--data-dir", str(tmp_path), **{variable: value})
    assert result.returncode == 2
    assert variable in result.stderr
    assert "invalid setting" in result.stderr


def test_serve_refuses_one_group_type_in_two_slots(tmp_path: Path) -> None:
    result = serve("--port", "1", "--data-dir", str(tmp_path), POSTHOG_GROUP_TYPE_1="team", POSTHOG_GROUP_TYPE_3="team")
    assert result.returncode == 2
    assert "POSTHOG_GROUP_TYPE_1=team, POSTHOG_GROUP_TYPE_3=team" in result.stderr


def test_a_project_token_is_refused_as_a_key_to_the_flag_definitions_or_the_persons() -> None:
    # The token is in every page that loads posthog-js: as a key it would open the definitions
    # (and the emails or plans their conditions name), or every person's properties, to anyone.
    for variable in ("HOGFLARE_PERSONAL_API_KEYS", "HOGFLARE_PROJECT_SECRET_KEYS", "HOGFLARE_PERSON_API_KEYS"):
        with pytest.raises(ConfigError, match=f"{variable}: 'phc_public' is a project token"):
            Settings.from_env({variable: "phx_private,phc_public"})
        with pytest.raises(ConfigError, match=f"{variable}: 'mine' is a project token"):
            Settings.from_env({variable: "mine", "HOGFLARE_PROJECT_TOKENS": "mine,other"})
    settings = Settings.from_env({"HOGFLARE_PERSONAL_API_KEYS": "phx_private", "HOGFLARE_PROJECT_TOKENS": "mine"})
    assert settings.personal_api_keys == ("phx_private",)
    with pytest.raises(ConfigError, match="persons need a key of their own"):
        Settings.from_env({"HOGFLARE_PERSON_API_KEYS": "phc_public"})
    settings = Settings.from_env({"HOGFLARE_PERSON_API_KEYS": " phx_a , phx_b "})
    assert settings.person_api_keys == ("phx_a", "phx_b")


def test_durations_may_be_fractional_and_zero() -> None:
    settings = Settings.from_env(
        {
            "HOGFLARE_FLUSH_INTERVAL_SECS": "0.25",
            "HOGFLARE_SHUTDOWN_TIMEOUT_SECS": "0",
            "HOGFLARE_OUTBOX_MAX_BYTES": "0",
        }
    )
    assert settings.flush_interval_secs == 0.25
    assert settings.shutdown_timeout_secs == 0
    assert settings.outbox_max_bytes == 0
    with pytest.raises(ConfigError, match="HOGFLARE_SIGNATURE_TOLERANCE_SECS"):
        Settings.from_env({"HOGFLARE_SIGNATURE_TOLERANCE_SECS": "-5"})


@pytest.mark.parametrize("app_addr", ["0.0.0.0:abc", "127.0.0.1:70000", "127.0.0.1"])
def test_serve_refuses_an_app_addr_without_a_port(tmp_path: Path, app_addr: str) -> None:
    result = serve("--data-dir", str(tmp_path), APP_ADDR=app_addr)
    assert result.returncode == 2
    assert "invalid setting: APP_ADDR" in result.stderr


def test_serve_says_when_the_data_directory_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = serve("--port", "1", "--data-dir", str(blocker / "data"))
    assert result.returncode == 2
    assert f"error: the data directory {blocker / 'data'} cannot be written" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_says_when_the_lake_cannot_be_written(tmp_path: Path) -> None:
    """A lake the shipper cannot write would fail every flush while the outbox filled: refused at
    start, with the directory named. (A file in its place stands for one of another user's.)"""
    data = tmp_path / "data"
    data.mkdir()
    (data / "lake").write_text("")
    result = serve("--port", "1", "--data-dir", str(data))
    assert result.returncode == 2
    assert f"error: the lake directory {data / 'lake'} cannot be written" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_map_size_of_any_round_number_opens_the_store(tmp_path: Path) -> None:
    """LMDB wants whole pages; a size in decimal units is rounded up rather than refused."""
    from hogflare.store import open_store

    settings = Settings.from_env({"HOGFLARE_LMDB_MAP_SIZE": "1000000000"}, data_dir=tmp_path)
    assert open_store(settings).outbox_state()[0] >= 1


def test_serve_refuses_a_port_another_server_listens_on(tmp_path: Path) -> None:
    """Granian's listeners share a port (``SO_REUSEPORT``): without the check a second server would
    take half of the first one's requests into another data directory."""
    import socket

    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = serve("--port", str(port), "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr


@pytest.mark.parametrize("host", ["no-such-host.invalid", "10.255.255.1"])
def test_serve_refuses_an_address_it_cannot_listen_on(tmp_path: Path, host: str) -> None:
    result = serve("--host", host, "--port", "18080", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert f"error: cannot listen on {host}:18080" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_store_it_cannot_open(tmp_path: Path) -> None:
    """Said once, before any worker starts: each worker would fail on it, and be started again."""
    store = tmp_path / "data" / "store"
    store.mkdir(parents=True)
    (store / "data.mdb").write_bytes(b"\x00not an lmdb file" * 4096)
    shared = set(SHARED_MEMORY.glob("hogflare-*"))
    result = serve("--port", "1", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2
    assert f"error: the store in {store} cannot be opened" in result.stderr
    assert "Traceback" not in result.stderr
    assert set(SHARED_MEMORY.glob("hogflare-*")) <= shared, "no metrics files left behind"


def test_a_server_that_stores_nothing_says_so(tmp_path: Path) -> None:
    """`HOGFLARE_STORE=off` answers 200 and keeps nothing: each worker warns as it starts."""
    with Server(tmp_path / "data", env={"HOGFLARE_STORE": "off"}) as running:
        body = {"api_key": "phc_off", "batch": [event("lost")]}
        assert httpx.post(f"{running.url}/batch/", json=body, timeout=10).status_code == 200
        assert "HOGFLARE_STORE=off: events are answered 200 and never stored" in running.log()


def test_only_a_group_slot_past_4_that_is_set_is_refused() -> None:
    assert Settings.from_env({"POSTHOG_GROUP_TYPE_MAPPING": "x", "POSTHOG_GROUP_TYPE_7": " "}).group_types[0] is None
    with pytest.raises(ConfigError, match="POSTHOG_GROUP_TYPE_7: PostHog's group type slots are 0 to 4"):
        Settings.from_env({"POSTHOG_GROUP_TYPE_7": "team"})
