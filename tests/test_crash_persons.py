"""Persons under crashes and concurrency: client threads identify fresh anonymous ids into shared users
and stream ``$set`` counters (one key per thread) through several routes while a two-worker server is
SIGKILLed and restarted. Each request is retried with the same event uuids until it is answered, as
SDKs do. Afterwards the lake agrees with every acknowledged request: each event once, with the person
state its own update produced, one snapshot per event, and no update lost."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from hogflare.config import Settings
from hogflare.lake import Lake
from hogflare.query import run, to_json
from tests.helpers.server import Server

pytestmark = [pytest.mark.server, pytest.mark.slow]

TOKEN = "phc_crash_persons"
PERSON_NAMESPACE = uuid.UUID("932979b4-65c3-4424-8467-0b66ec27bc22")
THREADS = 4
USERS = 3
KILLS = 4


@dataclass(frozen=True)
class Sent:
    """One event as sent: whose it is, the counter value its ``$set`` carried, its snapshot operation,
    and whether it went to an anonymous id not yet identified (so to that id's own new person)."""

    distinct_id: str
    user: str
    key: str
    k: int
    operation: str
    anonymous: bool = False


class Writer(threading.Thread):
    """One client: per iteration an anonymous capture, an identify into a shared user, then a batch."""

    def __init__(self, index: int, url: list[str], stop: threading.Event) -> None:
        super().__init__(name=f"writer-{index}", daemon=True)
        self.index = index
        self.url = url
        self.stop = stop
        self.key = f"n_{index}"
        self.k = 0
        self.sent: dict[str, Sent] = {}
        self.identified: dict[str, set[str]] = {}
        self.last: dict[str, int] = {}
        self.failures: list[str] = []
        self.unanswered = 0

    def event(self, name: str, distinct_id: str, user: str, *, anonymous: bool = False) -> dict[str, Any]:
        """The next event of this client: a fresh uuid and the next counter value in its ``$set``."""
        self.k += 1
        event_uuid = str(uuid.uuid4())
        operation = "identify" if name == "$identify" else "capture"
        self.sent[event_uuid] = Sent(distinct_id, user, self.key, self.k, operation, anonymous)
        return {
            "event": name,
            "distinct_id": distinct_id,
            "uuid": event_uuid,
            "properties": {"$set": {self.key: self.k}},
        }

    def post(self, http: httpx.Client, path: str, body: Any) -> None:
        """Until answered with a 200; the same body (so the same uuids) each time."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if http.post(f"{self.url[0]}{path}", json=body).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            self.unanswered += 1
            time.sleep(0.05)
        self.failures.append(f"{path} never acknowledged")
        raise TimeoutError(path)

    def run(self) -> None:
        with httpx.Client(timeout=5.0) as http:
            iteration = 0
            while not self.stop.is_set():
                user = f"user-{iteration % USERS}"
                anon = f"anon-{self.index}-{iteration}"
                self.post(http, "/capture/", {"api_key": TOKEN, **self.event("browse", anon, user, anonymous=True)})
                # posthog-js's shape: $set at the top level, the token and the anonymous id in properties.
                identify = self.event("$identify", user, user)
                identify["$set"] = identify["properties"].pop("$set")
                identify["properties"] |= {"token": TOKEN, "$anon_distinct_id": anon}
                self.post(http, "/i/v0/e/", [identify])
                self.identified.setdefault(user, set()).add(anon)
                batch = [self.event("update", distinct_id, user) for distinct_id in (user, anon, user, anon)]
                self.post(http, "/batch/", {"api_key": TOKEN, "batch": batch})
                self.last[user] = self.k
                iteration += 1


@pytest.fixture
def writers() -> Iterator[list[Writer]]:
    stop = threading.Event()
    url: list[str] = [""]
    made = [Writer(i, url, stop) for i in range(THREADS)]
    yield made
    stop.set()


def restart(data_dir: Path, env: dict[str, str], url: str) -> Server:
    """A new server on the same port, so the clients' retries reach it."""
    server = Server(data_dir, env=env, workers=2)
    server.port, server.url = int(url.rsplit(":", 1)[1]), url
    return server.start()


def query(data_dir: Path, sql: str) -> list[dict[str, Any]]:
    """What ``hogflare query --format json`` prints, read in-process (the command takes seconds to start)."""
    rows: list[dict[str, Any]] = json.loads(to_json(run(Lake(Settings.from_env({}, data_dir=data_dir).lake_dir), sql)))
    return rows


def wait_for_count(data_dir: Path, sql: str, count: int, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while query(data_dir, sql)[0]["n"] < count and time.monotonic() < deadline:
        time.sleep(0.3)


def decoded(row: dict[str, Any], column: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(row[column])
    return value


def load_under_kills(data_dir: Path, writers: list[Writer]) -> None:
    """Run the writers while the server is SIGKILLed and restarted; then let the lake catch up."""
    rng = random.Random(11)
    env = {"HOGFLARE_FLUSH_INTERVAL_SECS": "0.2"}
    server = Server(data_dir, env=env, workers=2).start()
    writers[0].url[0] = server.url
    for writer in writers:
        writer.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.8, 2.0))
            server.kill()
            server = restart(data_dir, env, server.url)
        time.sleep(1.0)
    finally:
        writers[0].stop.set()
        for writer in writers:
            writer.join(70)
    assert not any(writer.is_alive() for writer in writers)
    assert [failure for writer in writers for failure in writer.failures] == []
    sent = sum(len(writer.sent) for writer in writers)
    wait_for_count(data_dir, "select count(distinct uuid) as n from events", sent)
    wait_for_count(
        data_dir, "select count(distinct source_event_uuid) as n from persons where operation != 'merged'", sent
    )
    server.stop()


def live_persons(data_dir: Path, writers: list[Writer]) -> dict[str, dict[str, Any]]:
    """One live person per user, holding the user id and every anonymous id identified into it, with
    each client's counter at its last acknowledged value: no update lost."""
    persons: dict[str, dict[str, Any]] = {}
    for row in query(data_dir, f"select * from persons_latest where api_key = '{TOKEN}'"):
        users = [distinct_id for distinct_id in row["distinct_ids"] if distinct_id.startswith("user-")]
        assert len(users) == 1, row["distinct_ids"]
        persons[users[0]] = row
    assert len(persons) == USERS, sorted(persons)
    for user, row in persons.items():
        anons = set().union(*(writer.identified.get(user, set()) for writer in writers))
        assert set(row["distinct_ids"]) == {user} | anons, user
        assert row["is_identified"] is True, user
        merged = decoded(row, "merged_properties")
        counters = {writer.key: merged.get(writer.key) for writer in writers if user in writer.last}
        # Every request was answered in the end, so the last acknowledged value is also the last sent.
        assert counters == {writer.key: writer.last[user] for writer in writers if user in writer.last}, user
    return persons


@pytest.mark.timeout(150)
def test_sigkill_during_identifies_and_set_updates_loses_no_update(tmp_path: Path, writers: list[Writer]) -> None:
    data_dir = tmp_path / "data"
    load_under_kills(data_dir, writers)
    sent = {event_uuid: what for writer in writers for event_uuid, what in writer.sent.items()}
    assert len(sent) > 300, "the load did not run long enough to mean anything"
    assert sum(writer.unanswered for writer in writers) > 0, "no request went unanswered: the kills missed"

    # Every acknowledged event exactly once.
    events = query(data_dir, "select uuid, distinct_id, person_id, person_properties from events")
    counts = Counter(row["uuid"] for row in events)
    assert not sent.keys() - counts.keys(), f"{len(sent.keys() - counts.keys())} acknowledged events were lost"
    assert {u: n for u, n in counts.items() if n > 1} == {}, "events stored more than once"
    assert counts.keys() == sent.keys()

    persons = live_persons(data_dir, writers)

    # Each event row carries the person its id resolved to then and the state its own $set produced:
    # a fresh anonymous id its own new person, anything later the user's person.
    for row in events:
        what = sent[row["uuid"]]
        assert json.loads(row["person_properties"]).get(what.key) == what.k, (row["uuid"], what)
        if what.anonymous:
            assert row["person_id"] == str(uuid.uuid5(PERSON_NAMESPACE, f"{TOKEN}:{what.distinct_id}")), what
        else:
            assert row["person_id"] == persons[what.user]["person_id"], what

    # The persons table agrees: one snapshot per event with the same state, and one 'merged' row per
    # anonymous person merged away (every identified anonymous id but the first into each user).
    snapshots = query(data_dir, "select * from persons")
    per_event = [snap for snap in snapshots if snap["operation"] != "merged"]
    assert Counter(snap["source_event_uuid"] for snap in per_event) == Counter(sent.keys())
    person_of = {row["uuid"]: row["person_id"] for row in events}
    for snap in per_event:
        what = sent[snap["source_event_uuid"]]
        assert decoded(snap, "merged_properties").get(what.key) == what.k, what
        assert (snap["person_id"], snap["operation"]) == (person_of[snap["source_event_uuid"]], what.operation), what
    identifies = sum(len(anons) for writer in writers for anons in writer.identified.values())
    assert sum(snap["operation"] == "merged" for snap in snapshots) == identifies - USERS
