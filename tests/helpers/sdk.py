"""Runs the Node scripts in ``tests/js`` that drive posthog-node and posthog-js (in Chromium)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

JS = Path(__file__).parent.parent / "js"


def run_script(
    script: str, host: str, token: str, scenario: str, run_id: str, *extra: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run one scenario of ``script`` against ``host`` (``env`` added to the environment); returns
    the JSON object it printed last."""
    args = ["node", str(JS / script), "--host", host, "--token", token, "--scenario", scenario, "--run-id", run_id]
    environment = {**os.environ, **(env or {})}
    result = subprocess.run([*args, *extra], capture_output=True, text=True, timeout=90, cwd=JS, env=environment)
    assert result.returncode == 0, result.stderr
    output: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return output
