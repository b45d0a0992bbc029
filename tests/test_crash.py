"""Crash safety: a client records every uuid that got a 200 while the server is SIGKILLed at random
moments and restarted; afterwards every acknowledged uuid is in the lake exactly once."""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.helpers.server import Server, query, wait_for_rows

pytestmark = [pytest.mark.server, pytest.mark.slow]

TOKEN = "phc_crash"
KILLS = 5


class Client(threading.Thread):
    """Sends uuid-tagged batches; a batch that got no answer is resent later, as SDKs retry."""

    def __init__(self, name: str, url: list[str], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.url = url
        self.stop = stop
        self.acknowledged: set[str] = set()
        self.unanswered: list[list[str]] = []

    def run(self) -> None:
        with httpx.Client(timeout=5.0) as http:
            while not self.stop.is_set():
                uuids = self.unanswered.pop() if self.unanswered else [str(uuid.uuid4()) for _ in range(20)]
                batch = [
                    {"event": "crash", "distinct_id": f"{self.name}-{i % 3}", "uuid": u} for i, u in enumerate(uuids)
                ]
                try:
                    response = http.post(f"{self.url[0]}/batch/", json={"api_key": TOKEN, "batch": batch})
                except httpx.HTTPError:
                    self.unanswered.append(uuids)
                    time.sleep(0.05)
                    continue
                if response.status_code == 200:
                    self.acknowledged.update(uuids)
                else:
                    self.unanswered.append(uuids)
                    time.sleep(0.05)


def test_sigkill_never_loses_or_duplicates_an_acknowledged_event(tmp_path: Path) -> None:
    rng = random.Random(7)
    data_dir = tmp_path / "data"
    env = {"HOGFLARE_FLUSH_INTERVAL_SECS": "0.2"}
    server = Server(data_dir, env=env, workers=2).start()
    url = [server.url]
    stop = threading.Event()
    clients = [Client(f"client-{i}", url, stop) for i in range(4)]
    for client in clients:
        client.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.5, 2.0))
            server.kill()
            server = Server(data_dir, env=env, workers=2)
            server.port, server.url = int(url[0].rsplit(":", 1)[1]), url[0]
            server.start()
        time.sleep(1.0)
    finally:
        stop.set()
        for client in clients:
            client.join(10)
    # Resend what never got an answer, then stop gracefully so the outbox drains into the lake.
    with httpx.Client(timeout=10.0) as http:
        for client in clients:
            for uuids in client.unanswered:
                batch = [{"event": "crash", "distinct_id": "retry", "uuid": u} for u in uuids]
                assert http.post(f"{server.url}/batch/", json={"api_key": TOKEN, "batch": batch}).status_code == 200
                client.acknowledged.update(uuids)
    acknowledged = set().union(*(client.acknowledged for client in clients))
    assert len(acknowledged) > 500, "the load did not run long enough to mean anything"
    wait_for_rows(data_dir, "select distinct uuid from events", len(acknowledged), timeout=30)
    server.stop()

    counts = query(data_dir, "select uuid, count(*) as n from events group by uuid")
    stored = {row["uuid"]: row["n"] for row in counts}
    missing = acknowledged - stored.keys()
    duplicated = {u: n for u, n in stored.items() if n > 1}
    assert not missing, f"{len(missing)} acknowledged events were lost"
    assert not duplicated, f"{len(duplicated)} events were stored more than once"
