"""Body caps, stalled bodies, duplicates, the outbox high-water mark, and group commit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from hogflare import commit as commit_module
from hogflare._hogflare import StorageError, Store
from hogflare.app import App
from hogflare.config import Settings
from hogflare.http import Message
from hogflare.shipper import Shipper
from tests.conftest import TOKEN, Hogflare, event, gz, make_settings, running
from tests.helpers.held_commits import HeldCommits, swap_thread
from tests.helpers.server import query
from tests.helpers.stream import FakeStream


@contextlib.asynccontextmanager
async def started(tmp_path: Path, **overrides: Any) -> AsyncIterator[Hogflare]:
    async with running(make_settings(tmp_path / "data", **overrides)) as hogflare:
        yield hogflare


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[Hogflare]:
    """Caps small enough to test at the edge: 10 kB on the wire, 2x that once inflated."""
    async with started(tmp_path, max_body_bytes=10_000, inflate_ratio=2, max_event_bytes=4_000) as hogflare:
        yield hogflare


def sent_to(messages: list[Message]) -> Callable[[Message], Awaitable[None]]:
    async def send(message: Message) -> None:
        messages.append(message)

    return send


def sized(total: int) -> bytes:
    """A single-event JSON body of exactly ``total`` bytes."""

    def encode(pad: str) -> bytes:
        body = {"api_key": TOKEN, "event": "e", "distinct_id": "d", "properties": {"pad": pad}}
        return json.dumps(body, separators=(",", ":")).encode()

    body = encode("x" * (total - len(encode(""))))
    assert len(body) == total
    return body


async def test_wire_cap_at_the_limit_passes_and_one_more_byte_is_413(small: Hogflare) -> None:
    limit = small.settings.max_body_bytes
    at_limit = sized(500) + b" " * (limit - 500)
    assert (await small.post("/batch/", at_limit)).status_code == 200
    over = await small.post("/batch/", at_limit + b" ")
    assert over.status_code == 413
    assert "exceeds the maximum of 10000 bytes" in over.json()["error"]


async def test_inflated_cap_stops_a_gzip_bomb(small: Hogflare) -> None:
    bomb = gz(b"[" + b" " * 50_000 + b"]")
    assert len(bomb) < 10_000
    response = await small.post("/i/v0/e/", bomb)
    assert response.status_code == 413
    fits = gz(json.dumps([event(token=TOKEN)]) + " " * 19_000)
    assert (await small.post("/i/v0/e/", fits)).status_code == 200


async def test_an_event_over_the_per_event_cap_is_dropped_alone(small: Hogflare) -> None:
    batch = [event("small"), event("huge", properties={"blob": "x" * 5_000}), event("small too")]
    response = await small.post("/batch/", gz(json.dumps({"api_key": TOKEN, "batch": batch})))
    assert response.status_code == 200
    assert sorted(row["event"] for row in small.rows()) == ["small", "small too"]
    alone = await small.post("/batch/", gz(json.dumps({"api_key": TOKEN, "batch": [batch[1]]})))
    # Alone, it is PostHog's 413, which tells the SDKs to send smaller batches.
    assert alone.status_code == 413
    assert "event_too_large" in alone.json()["error"]
    assert "no event under the maximum of 4000 bytes" in alone.json()["error"]
    mixed = [batch[1], {"event": "no id", "properties": {}}]
    refused = await small.post("/batch/", gz(json.dumps({"api_key": TOKEN, "batch": mixed})))
    assert refused.status_code == 400


async def test_a_stalled_body_is_408(tmp_path: Path) -> None:
    async with started(tmp_path, body_timeout_secs=0.2) as hogflare:
        sent: list[Message] = []
        chunks = [{"type": "http.request", "body": b'[{"event":', "more_body": True}]

        async def receive() -> Message:
            if chunks:
                return chunks.pop()
            await asyncio.sleep(10)
            raise AssertionError("unreachable")

        scope = {"type": "http", "method": "POST", "path": "/e/", "query_string": b"", "headers": []}
        await hogflare.app(scope, receive, sent_to(sent))
        assert sent[0]["status"] == 408


async def test_a_retried_request_is_stored_once(hogflare: Hogflare) -> None:
    body = {
        "api_key": TOKEN,
        "batch": [event(f"e{i}", uuid=f"0190f0f0-0000-7000-8000-00000000000{i}") for i in range(3)],
    }
    for _ in range(3):
        assert (await hogflare.post("/batch/", body)).status_code == 200
    assert len(hogflare.rows()) == 3
    # Shipped rows are forgotten by the outbox, not by the dedupe window.
    assert (await hogflare.post("/batch/", body)).status_code == 200
    assert len(hogflare.rows()) == 3


async def test_dedupe_is_per_project(hogflare: Hogflare) -> None:
    item = event(uuid="0190f0f0-0000-7000-8000-000000000001")
    await hogflare.post("/batch/", {"api_key": "phc_one", "batch": [item]})
    await hogflare.post("/batch/", {"api_key": "phc_two", "batch": [item]})
    assert sorted(row["api_key"] for row in hogflare.rows()) == ["phc_one", "phc_two"]


async def test_uuids_are_forgotten_after_the_window(hogflare: Hogflare) -> None:
    item = event(uuid="0190f0f0-0000-7000-8000-000000000001")
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [item]})
    store = hogflare.app.store
    assert store is not None
    eight_days_later = time.time() + 8 * 86_400
    assert store.expire_seen(window_days=7, limit=1000, now=eight_days_later) == 1
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [item]})
    assert len(hogflare.rows()) == 2


async def test_outbox_high_water_mark_answers_503_then_recovers(tmp_path: Path) -> None:
    async with started(tmp_path, outbox_max_bytes=1) as hogflare:
        assert (await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("a")]})).status_code == 200
        refused = await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("b")]})
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) > 0
        assert "outbox is full" in refused.json()["error"]
        # Once the rows are delivered, the outbox drains and ingestion resumes by itself.
        assert [row["event"] for row in hogflare.rows()] == ["a"]
        assert (await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("c")]})).status_code == 200
        assert [row["event"] for row in hogflare.rows(order="event")] == ["a", "c"]


async def test_a_small_store_map_fills_the_outbox_before_the_map(tmp_path: Path) -> None:
    """Freeing delivered rows writes to the store: were its map full, nothing could be freed and
    ingestion would stay refused. The outbox's mark is at most a quarter of the map."""
    async with started(tmp_path, lmdb_map_size=64 << 20) as hogflare:
        assert hogflare.app.settings.outbox_limit == 16 << 20
        batch = [event("big", f"user-{i}", properties={"text": "x" * 2000}) for i in range(500)]
        statuses = []
        for _ in range(40):
            response = await hogflare.post("/batch/", {"api_key": TOKEN, "batch": batch})
            statuses.append(response.status_code)
            if response.status_code != 200:
                assert response.status_code == 503
                assert "outbox is full" in response.json()["error"], response.text
                break
        assert statuses[-1] == 503
        assert statuses.count(200) >= 5
        # Delivered, the rows are freed, and ingestion resumes by itself.
        assert len(hogflare.rows()) == 500 * statuses.count(200)
        assert (await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("after")]})).status_code == 200


class _TrimFails:
    """A store whose freeing of delivered rows fails, as it does when its map is full."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def trim_outbox(self, upto: int, *, limit: int) -> int:
        raise StorageError("store error: MDB_MAP_FULL: Environment mapsize limit reached")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.mark.parametrize("sinks", ["lake", "pipelines"])
async def test_delivered_rows_are_freed_by_a_shipper_that_starts(tmp_path: Path, fake: FakeStream, sinks: str) -> None:
    """Rows a failed trim left behind are freed by the next shipper as it runs, with nothing new
    to deliver (a full outbox lets nothing new in), whichever sinks it ships to."""
    settings = make_settings(tmp_path / "data", sinks=sinks, pipeline_endpoint=fake.url)
    store = await _closed_store_with(settings, "once")
    failing = Shipper(settings, store=cast(Store, _TrimFails(store)))
    with pytest.raises(StorageError):
        failing.ship_once()
    if failing.pipelines is not None:
        failing.pipelines.shutdown()
    assert store.outbox_state()[1] == 2  # delivered, not freed
    stop = threading.Event()
    running_shipper = threading.Thread(target=Shipper(settings, store=store).run, args=(stop,))
    running_shipper.start()
    try:
        deadline = time.monotonic() + 10
        while store.outbox_state()[1] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.outbox_state()[1] == 0, "freed while running, not only at the stop"
    finally:
        stop.set()
        running_shipper.join()
    if sinks == "lake":
        assert [row["event"] for row in query(settings.data_dir, "select event from events")] == ["once"]
    else:
        assert [row["event"] for row in fake.events()] == ["once"]


async def test_new_requests_get_503_while_no_commit_finishes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commit_module, "STALLED_COMMIT_SECS", 0.2)
    async with started(tmp_path) as hogflare:
        committer = hogflare.app.committer
        assert committer is not None
        held = HeldCommits()
        real = swap_thread(committer, held)
        waiting = asyncio.ensure_future(hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("held")]}))
        await asyncio.sleep(0.4)
        refused = await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("refused")]})
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) > 0
        assert "has finished no commit" in refused.json()["error"]
        ready = await hogflare.client.get("/_readiness")
        assert ready.status_code == 503
        assert any("no commit finished" in problem for problem in ready.json()["problems"])
        # The request that was waiting is answered once its commit finishes, and new ones are
        # taken again.
        held.release()
        assert (await asyncio.wait_for(waiting, 5)).status_code == 200
        assert (await hogflare.client.get("/_readiness")).status_code == 200
        swap_thread(committer, real)
        assert (await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event("after")]})).status_code == 200
        assert [row["event"] for row in hogflare.rows()] == ["after"]
        held.close()


async def test_concurrent_requests_share_commits_and_all_land(hogflare: Hogflare) -> None:
    async def send(i: int) -> int:
        response = await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event(f"e{i}", f"user-{i}")]})
        return response.status_code

    statuses = await asyncio.gather(*(send(i) for i in range(200)))
    assert set(statuses) == {200}
    assert len(hogflare.rows()) == 200


async def _closed_store_with(settings: Settings, name: str) -> Store:
    """The store of a server that took one event and stopped, its shipper never started."""
    app = App(settings)
    await app.startup()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        await client.post("/batch/", json={"api_key": TOKEN, "batch": [event(name)]})
    await app.shutdown()
    assert isinstance(app.store, Store)
    return app.store


async def test_rows_survive_reopening_the_store(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    # A new process would open the same store: the outbox still holds the row until it is shipped.
    store = await _closed_store_with(settings, "durable")
    assert store.outbox_state()[1] == 2  # the event row and its person snapshot
    shipped = Shipper(settings, store=store).drain()
    assert shipped == 2
