"""The Cloudflare Pipelines sink against a real ``hogflare fake-pipeline``: Hogflare's row shapes,
1 MB bodies, outages, a misconfigured stream, and each sink on its own or both together."""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from hogflare import pipelines
from hogflare.config import ConfigError, Settings
from hogflare.pipelines import PIPELINES_CURSOR, retry_after_secs
from hogflare.shipper import Shipper
from tests.conftest import TOKEN, Hogflare, event, make_settings, running
from tests.helpers.server import Server, query
from tests.helpers.stream import FakeStream

EVENT_REQUIRED = {"uuid", "source", "event", "distinct_id", "created_at"}
EVENT_OPTIONAL = {
    "team_id",
    "timestamp",
    "properties",
    "context",
    "person_id",
    "person_created_at",
    "person_properties",
    *(f"group{slot}" for slot in range(5)),
    "group_properties",
    "api_key",
    "extra",
}
PERSON_REQUIRED = {
    "uuid",
    "source",
    "operation",
    "person_id",
    "person_int_id",
    "canonical_distinct_id",
    "distinct_ids",
    "created_at",
    "updated_at",
    "version",
    "properties",
    "properties_set_once",
    "merged_properties",
    "source_event_uuid",
}
PERSON_OPTIONAL = {"team_id", "api_key"}


def events_and_persons(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    persons = [row for row in rows if "operation" in row]
    return [row for row in rows if "operation" not in row], persons


@pytest.fixture
async def streaming(tmp_path: Path, fake: FakeStream) -> AsyncIterator[Hogflare]:
    """The in-process app with both sinks, the events and persons streams on the fake."""
    settings = make_settings(
        tmp_path / "data",
        pipeline_endpoint=f"{fake.url}/",
        persons_pipeline_endpoint=f"{fake.url}/persons",
        team_id=2,
    )
    async with running(settings) as hogflare:
        yield hogflare


def shipper(hogflare: Hogflare) -> Shipper:
    assert hogflare.app.store is not None
    return Shipper(hogflare.settings, store=hogflare.app.store)


def ship_until(ship: Shipper, done: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ship.ship_once()
        if done():
            ship.drain()  # ends idle, which closes the stream connection
            return
        time.sleep(0.05)
    raise AssertionError("not delivered in time")


async def test_rows_arrive_with_hogflares_shapes(streaming: Hogflare, fake: FakeStream) -> None:
    batch = [
        event("$pageview", "anon-1", properties={"$current_url": "https://a.example/", "n": [1, {"x": None}]}),
        event("$identify", "user-1", properties={"$anon_distinct_id": "anon-1", "$set": {"plan": "pro"}}),
        event("bought", "user-1", properties={"$groups": {"company": "acme"}}, context={"ip": "1.2.3.4"}),
    ]
    response = await streaming.post("/batch/", {"api_key": TOKEN, "batch": batch})
    assert response.status_code == 200
    lake_events = streaming.rows()  # drains both sinks
    events, persons = events_and_persons(fake.rows())
    assert sorted(row["uuid"] for row in events) == sorted(str(row["uuid"]) for row in lake_events)
    for row in events:
        assert EVENT_REQUIRED <= row.keys() <= EVENT_REQUIRED | EVENT_OPTIONAL
        assert None not in row.values()
        assert row["team_id"] == 2
        assert row["api_key"] == TOKEN
        assert isinstance(row["properties"], dict)
        assert row["created_at"].endswith("Z")
    pageview = next(row for row in events if row["event"] == "$pageview")
    assert pageview["properties"]["n"] == [1, {"x": None}]
    assert next(row for row in events if row["event"] == "bought")["group0"] == "acme"
    assert len(persons) == len(streaming.persons()) > 0
    for row in persons:
        assert PERSON_REQUIRED <= row.keys() <= PERSON_REQUIRED | PERSON_OPTIONAL
        assert None not in row.values()
        assert row["source"] == "hogflare"
        assert isinstance(row["merged_properties"], dict)
        assert isinstance(row["distinct_ids"], list)
    assert any(row["merged_properties"].get("plan") == "pro" for row in persons)
    # The outbox is trimmed once both sinks have everything.
    assert streaming.app.store is not None
    assert streaming.app.store.outbox_state()[1] == 0


async def test_bodies_stay_within_a_megabyte(streaming: Hogflare, fake: FakeStream) -> None:
    blob = "x" * 40_000
    for start in range(0, 80, 20):
        batch = [event("big", f"user-{n}", properties={"blob": blob, "n": n}) for n in range(start, start + 20)]
        assert (await streaming.post("/batch/", {"api_key": TOKEN, "batch": batch})).status_code == 200
    streaming.rows()
    events, _ = events_and_persons(fake.rows())
    assert sorted(row["properties"]["n"] for row in events) == list(range(80))
    stats = fake.stats()
    assert 0 < stats["max_body_bytes"] <= 1_000_000
    assert stats["posts"] >= 4


async def test_an_outage_loses_nothing(streaming: Hogflare, fake: FakeStream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipelines, "_BACKOFF_MAX_SECS", 0.3)
    ship = shipper(streaming)
    assert ship.pipelines is not None
    fake.configure(fail_rate=1.0, status=503)
    sent: list[str] = []
    for round_ in range(3):
        batch = [event("during outage", f"user-{round_}", uuid=str(uuid.uuid4())) for _ in range(10)]
        sent += [item["uuid"] for item in batch]
        assert (await streaming.post("/batch/", {"api_key": TOKEN, "batch": batch})).status_code == 200
        ship.ship_once()
        time.sleep(0.35)
    assert fake.stats()["failures"] >= 2
    assert fake.rows() == []
    # The lake has everything; the outbox keeps it for the stream.
    assert len(streaming.rows("event = 'during outage'")) == 30
    assert streaming.app.store is not None
    assert streaming.app.store.outbox_state()[1] > 0
    fake.configure(status=429, retry_after=1)
    time.sleep(0.35)
    ship.ship_once()
    assert not ship.pipelines.due(), "Retry-After is honoured"
    assert ship.pipelines._next_attempt - time.monotonic() > 0.5
    fake.configure(fail_rate=0.0)
    ship_until(ship, lambda: streaming.app.store.outbox_state()[1] == 0)
    events, _ = events_and_persons(fake.rows())
    assert set(sent) <= {row["uuid"] for row in events}


async def test_a_stream_that_times_out_is_retried(tmp_path: Path, fake: FakeStream) -> None:
    settings = make_settings(tmp_path / "data", pipeline_endpoint=fake.url, pipeline_timeout_secs=0.3)
    async with running(settings) as hogflare:
        app, client = hogflare.app, hogflare.client
        batch = [event("slow", f"user-{n}") for n in range(3)]
        assert (await client.post("/batch/", json={"api_key": TOKEN, "batch": batch})).status_code == 200
        assert app.store is not None
        ship = Shipper(settings, store=app.store)
        assert ship.pipelines is not None
        fake.configure(delay=1.0)
        assert ship.ship_once() > 0  # the lake takes the rows; the stream times out
        assert ship.pipelines.retries == 1
        assert not ship.pipelines.parked
        fake.configure(delay=0)
        ship.pipelines._next_attempt = 0.0
        ship_until(ship, lambda: app.store.outbox_state()[1] == 0)
        events, _ = events_and_persons(fake.rows())
        assert {row["event"] for row in events} == {"slow"}
        assert len({row["uuid"] for row in events}) == 3


async def test_the_outbox_limit_counts_rows_the_stream_lacks(tmp_path: Path, fake: FakeStream) -> None:
    settings = make_settings(tmp_path / "data", pipeline_endpoint=fake.url, outbox_max_bytes=2_000)
    async with running(settings) as hogflare:
        app, client = hogflare.app, hogflare.client
        assert app.store is not None
        ship = Shipper(settings, store=app.store)
        fake.configure(fail_rate=1.0, status=500)
        statuses = []
        for n in range(20):
            batch = [event("fill", f"user-{n}", properties={"pad": "p" * 200})]
            statuses.append((await client.post("/batch/", json={"api_key": TOKEN, "batch": batch})).status_code)
            ship.ship_once()  # the lake takes everything; the stream takes nothing
        assert 503 in statuses
        full = await client.post("/batch/", json={"api_key": TOKEN, "batch": [event("more")]})
        assert full.status_code == 503
        assert "retry-after" in full.headers
        fake.configure(fail_rate=0.0)
        assert ship.pipelines is not None
        ship.pipelines._next_attempt = 0.0
        ship_until(ship, lambda: app.store.outbox_state()[1] == 0)
        again = await client.post("/batch/", json={"api_key": TOKEN, "batch": [event("more")]})
        assert again.status_code == 200


async def test_a_refusing_stream_parks_the_sink_loudly(
    tmp_path: Path, fake: FakeStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.configure(token="right")
    settings = make_settings(tmp_path / "data", pipeline_endpoint=fake.url, pipeline_auth_token="wrong")
    async with running(settings) as hogflare:
        app, client = hogflare.app, hogflare.client
        batch = [event("parked", f"user-{n}") for n in range(5)]
        assert (await client.post("/batch/", json={"api_key": TOKEN, "batch": batch})).status_code == 200
        assert app.store is not None
        ship = Shipper(settings, store=app.store)
        assert ship.pipelines is not None
        logs = structlog.testing.CapturingLogger()
        monkeypatch.setattr(pipelines, "log", logs)
        ship.drain()
        parked = [call for call in logs.calls if call.method_name == "error"]
        assert len(parked) == 1
        assert "PARKED" in parked[0].args[0]
        assert "401" in parked[0].kwargs["error"]
        assert ship.pipelines.parked
        assert not ship.pipelines.due()
        assert ship.pipelines.retries == 0
        posts = fake.stats()["posts"]
        for _ in range(20):
            ship.ship_once()
        assert fake.stats()["posts"] == posts, "a parked sink does not hammer the stream"
        assert app.store.outbox_state()[1] > 0
        # Once the configuration is fixed, nothing was lost.
        fake.configure(token=None)
        ship.pipelines._next_attempt = 0.0
        ship.drain()
        assert not ship.pipelines.parked
        assert app.store.outbox_state()[1] == 0
        events, _ = events_and_persons(fake.rows())
        assert len(events) == 5


async def test_a_row_larger_than_any_request_is_left_out_of_the_stream_and_nothing_else(
    tmp_path: Path, fake: FakeStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cloudflare refuses a request over its limit with 413; a row larger than that on its own can
    never be delivered, and must not hold back the rows after it (nor, once the outbox fills,
    ingestion). It is logged with its uuid and left out; the lake still has it."""
    fake.configure(max_request_bytes=100_000)
    settings = make_settings(tmp_path / "data", pipeline_endpoint=fake.url, pipeline_max_body_bytes=100_000)
    try:
        async with running(settings) as hogflare:
            huge = event("huge", "user-0", properties={"blob": "x" * 300_000}, uuid=str(uuid.uuid4()))
            batch = [event("small", f"user-{n}") for n in range(3)] + [huge]
            batch += [event("small", f"user-{n}") for n in range(3, 6)]
            assert (await hogflare.post("/batch/", {"api_key": TOKEN, "batch": batch})).status_code == 200
            logs = structlog.testing.CapturingLogger()
            monkeypatch.setattr(pipelines, "log", logs)
            ship = shipper(hogflare)
            assert ship.pipelines is not None
            ship.drain()
            assert not ship.pipelines.parked
            assert ship.pipelines.rows_left_out == 1
            assert hogflare.app.store is not None
            assert hogflare.app.store.outbox_state()[1] == 0
            left_out = [call for call in logs.calls if call.method_name == "error"]
            assert [call.kwargs["uuids"] for call in left_out] == [[huge["uuid"]]]
            events, _ = events_and_persons(fake.rows())
            assert sorted(row["event"] for row in events) == ["small"] * 6
            assert sorted(row["event"] for row in hogflare.rows()) == ["huge"] + ["small"] * 6
    finally:
        fake.configure(max_request_bytes=None)


async def test_pipelines_only(tmp_path: Path, fake: FakeStream) -> None:
    settings = make_settings(tmp_path / "data", pipeline_endpoint=fake.url, sinks="pipelines")
    assert settings.enabled_sinks == ("pipelines",)
    async with running(settings) as hogflare:
        app, client = hogflare.app, hogflare.client
        batch = [event("only", f"user-{n}") for n in range(7)]
        assert (await client.post("/batch/", json={"api_key": TOKEN, "batch": batch})).status_code == 200
        assert app.store is not None
        ship = Shipper(settings, store=app.store)
        assert ship.lake is None
        assert ship.drain() > 0
        assert app.store.outbox_state()[1] == 0
        assert app.store.cursor(PIPELINES_CURSOR) == app.store.outbox_state()[0] - 1
        assert not (settings.lake_dir / "catalog.db").exists()
        events, persons = events_and_persons(fake.rows())
        assert len(events) == 7
        assert persons == []  # no persons stream configured


async def test_a_sink_switched_off_and_on_again_says_which_rows_it_missed(tmp_path: Path, fake: FakeStream) -> None:
    both = make_settings(tmp_path / "data", pipeline_endpoint=fake.url, sinks="lake,pipelines")
    lake_only = make_settings(tmp_path / "data", pipeline_endpoint=fake.url, sinks="lake")

    async def send(settings: Settings, name: str, count: int) -> list[MutableMapping[str, Any]]:
        """Events through a server with these sinks, shipped; returns what the shipper logged."""
        async with running(settings) as hogflare:
            batch = [event(name, f"user-{n}", properties={"$process_person_profile": False}) for n in range(count)]
            assert (await hogflare.post("/batch/", {"api_key": TOKEN, "batch": batch})).status_code == 200
            with structlog.testing.capture_logs() as logs:
                shipper(hogflare).drain()
        gc.collect()  # the app's store is closed before the next one opens it, as across processes
        return logs

    await send(both, "first", 2)

    async def lag_rows(settings: Settings) -> dict[str, float]:
        async with running(settings) as hogflare:
            metrics = (await hogflare.client.get("/metrics")).text
        gc.collect()
        return {
            sample.labels["sink"]: sample.value
            for family in text_string_to_metric_families(metrics)
            for sample in family.samples
            if sample.name == "hogflare_sink_lag_rows"
        }

    await send(lake_only, "while-off", 3)  # the lake takes them, and the outbox frees them
    # Rows the stream can no longer get are not counted as its lag.
    assert await lag_rows(both) == {"lake": 0, PIPELINES_CURSOR: 0}
    logs = await send(both, "again", 4)
    # The stream is told of the three rows it missed; the lake, which had them, says nothing.
    missed = [(entry["sink"], entry["missed_from"], entry["missed_to"]) for entry in logs if "missed_from" in entry]
    assert missed == [(PIPELINES_CURSOR, 3, 5)]
    assert sorted(row["event"] for row in fake.rows()) == ["again"] * 4 + ["first"] * 2
    async with running(both) as hogflare:
        assert len(hogflare.rows()) == 9  # the lake has every row


def test_sinks_setting() -> None:
    assert Settings.from_env({}).enabled_sinks == ("lake",)
    both = {"CLOUDFLARE_PIPELINE_ENDPOINT": "http://stream.example/"}
    assert Settings.from_env(both).enabled_sinks == ("lake", "pipelines")
    assert Settings.from_env({**both, "HOGFLARE_SINKS": "lake"}).enabled_sinks == ("lake",)
    with pytest.raises(ConfigError, match="CLOUDFLARE_PIPELINE_ENDPOINT"):
        Settings.from_env({"HOGFLARE_SINKS": "pipelines"})
    with pytest.raises(ConfigError, match="HOGFLARE_SINKS"):
        Settings.from_env({"HOGFLARE_SINKS": "kafka"})


def test_retry_after() -> None:
    assert retry_after_secs("3") == 3.0
    assert retry_after_secs(None) is None
    assert retry_after_secs("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_secs("soon") is None


def test_a_real_server_feeds_lake_and_stream(tmp_path: Path, fake: FakeStream) -> None:
    env = {
        "CLOUDFLARE_PIPELINE_ENDPOINT": fake.url,
        "CLOUDFLARE_PERSONS_PIPELINE_ENDPOINT": f"{fake.url}/persons",
        "HOGFLARE_SINKS": "lake,pipelines",
    }
    data_dir = tmp_path / "data"
    sent: list[str] = []
    with Server(data_dir, env=env) as server:
        for n in range(5):
            batch = [event("served", f"user-{n}", uuid=str(uuid.uuid4())) for _ in range(20)]
            sent += [item["uuid"] for item in batch]
            response = httpx.post(f"{server.url}/batch/", json={"api_key": TOKEN, "batch": batch}, timeout=10)
            assert response.status_code == 200
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            events, persons = events_and_persons(fake.rows())
            if set(sent) <= {row["uuid"] for row in events}:
                break
            time.sleep(0.2)
        assert set(sent) <= {row["uuid"] for row in events}
        assert persons
    lake = query(data_dir, "select uuid::varchar as uuid from events where event = 'served'")
    assert sorted(row["uuid"] for row in lake) == sorted(sent), "the lake has each row exactly once"
