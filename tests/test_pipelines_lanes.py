"""The Pipelines sink POSTs side by side: lanes overlap, each distinct id keeps its order, a failed
POST resends only what the stream lacks, and a slow stream never holds back the lake."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from msgspec.structs import replace

from hogflare import pipelines
from hogflare.config import Settings
from hogflare.shipper import Shipper
from tests.conftest import TOKEN, event, make_settings, running
from tests.helpers.server import Server, wait_for_rows
from tests.helpers.stream import FakeStream

USERS = 24


def lane_settings(tmp_path: Path, fake: FakeStream, concurrency: int) -> Settings:
    # Small bodies, so that every lane has several and the order within a lane is put to the test.
    return make_settings(
        tmp_path / "data",
        pipeline_endpoint=fake.url,
        pipeline_max_body_bytes=2_000,
        pipeline_concurrency=concurrency,
        sinks="pipelines",
    )


async def send_numbered(settings: Settings, rounds: int = 4) -> dict[str, list[str]]:
    """``rounds`` batches, each with an event per user; returns each user's uuids in sending order."""
    sent: dict[str, list[str]] = {}
    async with running(settings) as hogflare:
        for round_ in range(rounds):
            batch = []
            for user in range(USERS):
                distinct_id = f"user-{user}"
                item = event("numbered", distinct_id, uuid=str(uuid.uuid4()), properties={"round": round_})
                sent.setdefault(distinct_id, []).append(item["uuid"])
                batch.append(item)
            assert (await hogflare.post("/batch/", {"api_key": TOKEN, "batch": batch})).status_code == 200
        assert hogflare.app.store is not None
        shipper = Shipper(settings, store=hogflare.app.store)
        deadline = time.monotonic() + 60
        while hogflare.app.store.outbox_state()[1] and time.monotonic() < deadline:
            shipper.ship_once()
            time.sleep(0.02)
        assert hogflare.app.store.outbox_state()[1] == 0, "the stream took every row"
        assert shipper.pipelines is not None
        shipper.pipelines.shutdown()
    return sent


def arrival_by_user(fake: FakeStream) -> dict[str, list[str]]:
    arrived: dict[str, list[str]] = {}
    for row in fake.events():
        arrived.setdefault(row["distinct_id"], []).append(row["uuid"])
    return arrived


async def test_lanes_overlap_and_each_distinct_id_keeps_its_order(tmp_path: Path, fake: FakeStream) -> None:
    fake.configure(delay=0.1)
    sent = await send_numbered(lane_settings(tmp_path, fake, concurrency=4))
    stats = fake.stats()
    assert 2 <= stats["max_in_flight"] <= 4, stats
    assert arrival_by_user(fake) == sent, "each user's rows arrive once, in the order they were sent"


async def test_one_lane_sends_one_post_at_a_time(tmp_path: Path, fake: FakeStream) -> None:
    fake.configure(delay=0.02)
    sent = await send_numbered(lane_settings(tmp_path, fake, concurrency=1), rounds=2)
    assert fake.stats()["max_in_flight"] == 1
    assert arrival_by_user(fake) == sent


async def test_after_failures_only_the_rows_the_stream_lacks_are_sent_again(
    tmp_path: Path, fake: FakeStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipelines, "_BACKOFF_MAX_SECS", 0.1)
    # Half the POSTs fail: the lanes that got through are not sent again, the others resume where
    # they stopped, so every row arrives exactly once and in order.
    fake.configure(fail_rate=0.5, status=503)
    settings = lane_settings(tmp_path, fake, concurrency=4)
    sent = await send_numbered(settings)
    assert fake.stats()["failures"] > 0
    assert arrival_by_user(fake) == sent


def test_a_slow_stream_does_not_hold_back_the_lake(tmp_path: Path, fake: FakeStream) -> None:
    env = {
        "CLOUDFLARE_PIPELINE_ENDPOINT": fake.url,
        "HOGFLARE_SINKS": "lake,pipelines",
        "HOGFLARE_FLUSH_INTERVAL_SECS": "0.2",
        "CLOUDFLARE_PIPELINE_TIMEOUT_SECS": "30",
    }
    data_dir = tmp_path / "data"
    fake.configure(delay=15)
    with Server(data_dir, env=env) as server:

        def send(name: str) -> None:
            batch = [event(name, f"user-{n}") for n in range(10)]
            response = httpx.post(f"{server.url}/batch/", json={"api_key": TOKEN, "batch": batch}, timeout=10)
            assert response.status_code == 200

        send("first")
        fake.wait_for_stats(lambda stats: stats["in_flight"] > 0, "the stream to be sent the first rows")
        send("second")
        wait_for_rows(data_dir, "select * from events where event = 'second'", 10)
        stats = fake.stats()
        assert stats["rows"] == 0, "the stream is still on the first rows"
        assert stats["in_flight"] > 0
        fake.configure(delay=0)
    uuids = {row["uuid"] for row in wait_for_rows(data_dir, "select uuid::varchar as uuid from events", 20)}
    assert uuids <= {row["uuid"] for row in fake.events()}


async def test_an_unexpected_error_in_one_lane_is_retried_without_loss(
    tmp_path: Path, fake: FakeStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lane that meets something other than an HTTP failure (here, the third POST raises) must
    # not leave the other lanes running while the chunk is tried again.
    monkeypatch.setattr(pipelines, "_BACKOFF_MAX_SECS", 0.1)
    post = pipelines.PipelinesSink._post
    calls = 0

    def flaky(self: pipelines.PipelinesSink, index: int, stream: pipelines.Stream, body: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("a response nobody expected")
        post(self, index, stream, body)

    monkeypatch.setattr(pipelines.PipelinesSink, "_post", flaky)
    fake.configure(delay=0.05)
    sent = await send_numbered(lane_settings(tmp_path, fake, concurrency=4))
    assert calls > 3
    assert arrival_by_user(fake) == sent, "every row once, each user's in order"


async def test_no_post_starts_after_the_shutdown_deadline(tmp_path: Path, fake: FakeStream) -> None:
    # The last delivery stops starting POSTs at the deadline, so it ends within one request
    # timeout of it however many bodies a lane holds; the rest ship after the next start.
    settings = lane_settings(tmp_path, fake, concurrency=1)
    fake.configure(delay=0.3)
    async with running(settings) as hogflare:
        batch = [event("late", f"user-{n % 3}", uuid=str(uuid.uuid4())) for n in range(30)]
        assert (await hogflare.post("/batch/", {"api_key": TOKEN, "batch": batch})).status_code == 200
        assert hogflare.app.store is not None
        shipper = Shipper(settings, store=hogflare.app.store)
        assert shipper.pipelines is not None
        shipper.pipelines.send_by = time.monotonic() + 0.5
        assert shipper.ship_once() == 0
        assert shipper.pipelines.retries == 0, "stopping at the deadline is no failure"
        at_deadline = fake.stats()["posts"]
        assert at_deadline >= 1
        assert hogflare.app.store.outbox_state()[1] > 0
        shipper.pipelines.send_by = None
        fake.configure(delay=0)
        while shipper.ship_once():
            pass
        shipper.pipelines.shutdown()
    assert fake.stats()["posts"] > at_deadline + 1, "the lane had bodies left when the deadline came"
    assert sorted(row["uuid"] for row in fake.events()) == sorted(item["uuid"] for item in batch)


async def test_a_chunk_being_delivered_at_the_stop_starts_no_post_past_the_deadline(
    tmp_path: Path, fake: FakeStream
) -> None:
    """SIGTERM in the middle of a chunk's delivery: its lanes stop starting POSTs at the shutdown
    deadline, counted from the stop, and the shipper exits; the rest ship after the next start."""
    settings = replace(lane_settings(tmp_path, fake, concurrency=1), shutdown_timeout_secs=0.5)
    fake.configure(delay=0.3)
    async with running(replace(settings, sinks="lake")) as hogflare:
        batch = [event("stopped", f"user-{n % 3}", uuid=str(uuid.uuid4())) for n in range(40)]
        assert (await hogflare.post("/batch/", {"api_key": TOKEN, "batch": batch})).status_code == 200
        assert hogflare.app.store is not None
        shipper = Shipper(settings, store=hogflare.app.store)
        stop = threading.Event()
        running_shipper = threading.Thread(target=shipper.run, args=(stop,))
        running_shipper.start()
        while fake.stats()["posts"] < 2:
            time.sleep(0.05)
        stop.set()
        at_stop = fake.stats()["posts"]
        running_shipper.join(timeout=30)
        assert not running_shipper.is_alive()
        # The deadline leaves room for a POST or two of 0.3 s, not the chunk's dozen.
        assert fake.stats()["posts"] <= at_stop + 3
        assert hogflare.app.store.outbox_state()[1] > 0, "rows the stream lacks stay in the outbox"
        fake.configure(delay=0)
        again = Shipper(settings, store=hogflare.app.store)
        while again.ship_once():
            pass
        assert again.pipelines is not None
        again.pipelines.shutdown()
    assert sorted({row["uuid"] for row in fake.events()}) == sorted(item["uuid"] for item in batch)


async def test_a_stream_slower_than_the_timeout_gets_a_longer_one_after_a_timeout(
    tmp_path: Path, fake: FakeStream
) -> None:
    """A stream that takes 1.5 s to answer, against a 1 s timeout: the timed-out POST may have
    been taken all the same, so it is sent again, with twice the timeout, and goes through,
    rather than being sent again every few seconds for as long as the stream stays slow."""
    settings = replace(lane_settings(tmp_path, fake, concurrency=1), pipeline_timeout_secs=1.0)
    fake.configure(delay=1.5)
    async with running(settings) as hogflare:
        batch = [event("slow", "user-1", uuid=str(uuid.uuid4())) for _ in range(5)]
        assert (await hogflare.post("/batch/", {"api_key": TOKEN, "batch": batch})).status_code == 200
        assert hogflare.app.store is not None
        shipper = Shipper(settings, store=hogflare.app.store)
        assert shipper.pipelines is not None
        deadline = time.monotonic() + 30
        while hogflare.app.store.outbox_state()[1] and time.monotonic() < deadline:
            shipper.ship_once()
            time.sleep(0.05)
        assert hogflare.app.store.outbox_state()[1] == 0, "the stream took the rows"
        assert shipper.pipelines.retries >= 1
        shipper.pipelines.shutdown()
    time.sleep(1.6)  # the abandoned POST lands at the stream too
    copies = [row["uuid"] for row in fake.events()]
    assert sorted(set(copies)) == sorted(item["uuid"] for item in batch)
    assert all(copies.count(item["uuid"]) <= 2 for item in batch)
