"""Settings a server cannot use stop it at startup, with the variable's name in the message."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hogflare.config import ConfigError, Settings
from tests.helpers.server import HOGFLARE


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
    ],
)
def test_serve_refuses_a_bad_setting_by_name(tmp_path: Path, variable: str, value: str) -> None:
    result = subprocess.run(
        [HOGFLARE, "serve", "--port", "1", "--data-dir", str(tmp_path)],
        env={**os.environ, variable: value},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert variable in result.stderr
    assert "invalid setting" in result.stderr


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
    result = subprocess.run(
        [HOGFLARE, "serve", "--data-dir", str(tmp_path)],
        env={**os.environ, "APP_ADDR": app_addr},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid setting: APP_ADDR" in result.stderr


def test_serve_says_when_the_data_directory_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = subprocess.run(
        [HOGFLARE, "serve", "--port", "1", "--data-dir", str(blocker / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"error: the data directory {blocker / 'data'} cannot be written" in result.stderr
    assert "Traceback" not in result.stderr
