"""Shared fixtures: an in-process app (httpx ASGITransport) whose rows are read back from the lake."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from hogflare.app import App
from hogflare.config import Settings
from hogflare.lake import Lake
from hogflare.query import run
from hogflare.shipper import Shipper
from tests.helpers.stream import FakeStream

FIXTURES = Path(__file__).parent / "fixtures"
TOKEN = "phc_test_token"
#: Columns of the lake's views that hold JSON text.
JSON_COLUMNS = (
    "properties",
    "context",
    "extra",
    "person_properties",
    "group_properties",
    "properties_set_once",
    "merged_properties",
)
#: Columns that show a person's properties. Every new person has ``$creator_event_uuid``, the
#: uuid of the event that created it (as on PostHog); the readers below move it out of these
#: objects into ``"<column>.$creator_event_uuid"`` so that tests compare the properties events set.
PERSON_COLUMNS = ("person_properties", "merged_properties")
CREATOR = "$creator_event_uuid"


def decode_json_columns(row: dict[str, Any], columns: tuple[str, ...], view: str = "events") -> None:
    person_columns = ("properties", *PERSON_COLUMNS) if view.startswith("persons") else PERSON_COLUMNS
    for column in columns:
        if not isinstance(row.get(column), str):
            continue
        row[column] = value = json.loads(row[column])
        if column in person_columns and isinstance(value, dict) and CREATOR in value:
            row[f"{column}.{CREATOR}"] = value.pop(CREATOR)


@dataclass(frozen=True)
class Err:
    """Expected failure in a parametrised table: the status and a fragment of the error text."""

    status: int
    message: str = ""


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def gz(data: bytes | str) -> bytes:
    return gzip.compress(data.encode() if isinstance(data, str) else data)


def event(name: str = "test event", distinct_id: str = "user-1", **fields: Any) -> dict[str, Any]:
    return {"event": name, "distinct_id": distinct_id, "properties": {}, **fields}


def snapshot(distinct_id: str = "user-1", **properties: Any) -> dict[str, Any]:
    """A posthog-js ``$snapshot`` item for ``/s/``, with one full rrweb snapshot."""
    return {
        "event": "$snapshot",
        "properties": {
            "$snapshot_data": [{"type": 2, "data": {"node": {}}, "timestamp": 1700000000000}],
            "$session_id": "0190aaaa-bbbb-7ccc-8ddd-eeeeffff0000",
            "$window_id": "window-1",
            "distinct_id": distinct_id,
            "token": TOKEN,
            **properties,
        },
    }


class Hogflare:
    """An app under test plus a way to read what landed in its lake."""

    def __init__(self, app: App, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    @property
    def settings(self) -> Settings:
        return self.app.settings

    def rows(self, where: str = "true", order: str = "timestamp, uuid") -> list[dict[str, Any]]:
        """Ship everything committed so far, then read the event rows back from the lake."""
        return self.read("events", where, order)

    def persons(self, where: str = "true", order: str = "updated_at, version") -> list[dict[str, Any]]:
        """Every person snapshot row (view ``persons``), JSON columns decoded."""
        return self.read("persons", where, order)

    def persons_latest(self, where: str = "true", order: str = "person_int_id") -> list[dict[str, Any]]:
        """The newest snapshot of each live person (view ``persons_latest``)."""
        return self.read("persons_latest", where, order)

    def groups(self, where: str = "true", order: str = "group_type_index, group_key") -> list[dict[str, Any]]:
        """One row per group (view ``groups``)."""
        return self.read("groups", where, order)

    def read(self, view: str, where: str = "true", order: str = "1") -> list[dict[str, Any]]:
        """Ship everything committed so far, then read ``view`` back from the lake."""
        assert self.app.store is not None
        Shipper(self.settings, store=self.app.store).drain()
        table = run(Lake(self.settings.lake_dir), f"select * from {view} where {where} order by {order}")
        rows: list[dict[str, Any]] = table.to_pylist()
        for row in rows:
            decode_json_columns(row, JSON_COLUMNS, view)
        return rows

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        if body is not None and not isinstance(body, bytes | str):
            kwargs.setdefault("json", body)
        elif body is not None:
            kwargs.setdefault("content", body)
        return await self.client.post(path, **kwargs)


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {"data_dir": data_dir, "shipper": "off", "flush_interval_secs": 0.2}
    base.update(overrides)
    return Settings.from_env({}, **base)


@pytest.fixture(scope="session", autouse=True)
def _outside_the_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test, and every ``hogflare`` it starts, runs in a directory of its own: a
    developer's ``.env.local`` in the checkout would otherwise set their settings."""
    checkout = Path.cwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(checkout)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@contextlib.asynccontextmanager
async def running(settings: Settings, peer: str = "127.0.0.1") -> AsyncIterator[Hogflare]:
    """The app started with ``settings``, a client on it (connecting from ``peer``), and shut down
    afterwards."""
    app = App(settings)
    await app.startup()
    try:
        transport = httpx.ASGITransport(app=app, client=(peer, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://hogflare.test") as client:
            yield Hogflare(app, client)
    finally:
        # Also after a failed assertion: the store and the shipper's threads would outlive the test.
        await app.shutdown()


@pytest.fixture
async def hogflare(settings: Settings) -> AsyncIterator[Hogflare]:
    async with running(settings) as app:
        yield app


@pytest.fixture(scope="module")
def fake_process() -> Iterator[FakeStream]:
    """One ``hogflare fake-pipeline`` per test module (a module may define its own ``fake``)."""
    with FakeStream() as fake:
        yield fake


@pytest.fixture
def fake(fake_process: FakeStream) -> FakeStream:
    """The module's fake stream, well-behaved and empty for each test."""
    fake_process.reset()
    return fake_process
