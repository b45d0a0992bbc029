"""Remote config flags: the payload server SDKs fetch with ``getRemoteConfigPayload`` (posthog-node)
and ``get_remote_config_payload`` (posthog-python), from
``/api/projects/@current/feature_flags/<key>/remote_config``, judged by the real SDKs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import posthog
import pytest

from tests.helpers.server import Server

pytestmark = [pytest.mark.server, pytest.mark.sdk]

JS = Path(__file__).parent / "js"
PERSONAL_KEY = "phx_remote_config"
TOKEN = "phc_remote_config"
PAYLOAD = {"theme": "dark", "limit": 3}
FLAGS = {
    "flags": [
        {
            "id": 41,
            "key": "app-config",
            "active": True,
            "is_remote_configuration": True,
            "filters": {"groups": [{"rollout_percentage": 100}], "payloads": {"true": json.dumps(PAYLOAD)}},
        },
        {"id": 42, "key": "empty-config", "active": True, "is_remote_configuration": True, "filters": {}},
        {
            "id": 43,
            "key": "beta",
            "active": True,
            "filters": {"groups": [{"rollout_percentage": 100}], "payloads": {"true": '"not remote config"'}},
        },
    ]
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("remote-config") / "data"
    data_dir.mkdir(parents=True)
    (data_dir / "flags.json").write_text(json.dumps(FLAGS))
    with Server(data_dir, env={"HOGFLARE_PERSONAL_API_KEYS": PERSONAL_KEY}) as running:
        yield running


def fetch(server: Server, key: str, secret: str = PERSONAL_KEY) -> httpx.Response:
    return httpx.get(
        f"{server.url}/api/projects/@current/feature_flags/{key}/remote_config",
        params={"token": TOKEN},
        headers={"authorization": f"Bearer {secret}"},
    )


def test_the_payload_by_key_or_id_for_a_secret_key(server: Server) -> None:
    # As PostHog stores payloads: a JSON string holding the payload's JSON.
    for key in ("app-config", "41"):
        response = fetch(server, key)
        assert response.status_code == 200
        assert json.loads(response.json()) == PAYLOAD
    assert fetch(server, "empty-config").json() is None
    assert fetch(server, "beta").status_code == 404
    assert fetch(server, "no-such-flag").status_code == 404
    assert fetch(server, "app-config", secret="phx_wrong").status_code == 401


def test_posthog_python_reads_the_payload(server: Server) -> None:
    client = posthog.Posthog(TOKEN, host=server.url, secret_key=PERSONAL_KEY, enable_local_evaluation=False)
    try:
        assert json.loads(client.get_remote_config_payload("app-config")) == PAYLOAD
        assert client.get_remote_config_payload("beta") is None
    finally:
        client.shutdown()


def test_posthog_node_reads_the_payload(server: Server) -> None:
    script = """
import { PostHog } from 'posthog-node'
const [host, token, key] = process.argv.slice(1)
const client = new PostHog(token, { host, personalApiKey: key, featureFlagsPollingInterval: 600000 })
const payload = await client.getRemoteConfigPayload('app-config')
await client.shutdown()
process.stdout.write(JSON.stringify({ payload }) + '\\n')
"""
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script, server.url, TOKEN, PERSONAL_KEY],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=JS,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"payload": PAYLOAD}
