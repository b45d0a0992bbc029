"""Helpers for the person and group tests: request items, PostHog's person uuid, lake look-ups."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from hogflare.app import App
from hogflare.config import Settings
from tests.conftest import TOKEN, Hogflare

NAMESPACE = uuid.UUID("932979b4-65c3-4424-8467-0b66ec27bc22")
PERSONLESS_CREATED_AT = dt.datetime(1970, 1, 1, 0, 0, 5, tzinfo=dt.UTC)


def person_uuid(distinct_id: str, team: object = TOKEN) -> str:
    """PostHog's person uuid: UUIDv5 of ``"{team}:{distinct_id}"`` (the token when no team id is set)."""
    return str(uuid.uuid5(NAMESPACE, f"{team}:{distinct_id}"))


def at(day: int) -> str:
    return f"2024-01-{day:02d}T00:00:00Z"


def day(number: int) -> dt.datetime:
    return dt.datetime(2024, 1, number, tzinfo=dt.UTC)


def capture(
    distinct_id: str, properties: dict[str, Any] | None = None, name: str = "test event", **fields: Any
) -> dict[str, Any]:
    """One ``/batch`` item."""
    return {"event": name, "distinct_id": distinct_id, "properties": properties or {}, **fields}


def identify(distinct_id: str, anon: str, properties: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return capture(distinct_id, {"$anon_distinct_id": anon, **(properties or {})}, "$identify", **fields)


async def send(
    hogflare: Hogflare, *items: dict[str, Any], path: str = "/batch/", headers: dict[str, str] | None = None
) -> None:
    response = await hogflare.post(path, {"api_key": TOKEN, "batch": list(items)}, headers=headers)
    assert (response.status_code, response.json()) == (200, {"status": 1})


async def post_ok(hogflare: Hogflare, path: str, body: Any) -> None:
    response = await hogflare.post(path, body)
    assert response.status_code == 200, response.text


def sql(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def has_id(distinct_id: str) -> str:
    return f"list_contains(distinct_ids, {sql(distinct_id)})"


def person_of(hogflare: Hogflare, distinct_id: str) -> dict[str, Any]:
    """The live person holding ``distinct_id`` (exactly one)."""
    rows = hogflare.persons_latest(has_id(distinct_id))
    assert len(rows) == 1, rows
    return rows[0]


def event_rows(hogflare: Hogflare, name: str) -> list[dict[str, Any]]:
    return hogflare.rows(f"event = {sql(name)}")


@contextlib.asynccontextmanager
async def started(data_dir: Path, env: dict[str, str] | None = None, **overrides: Any) -> AsyncIterator[Hogflare]:
    """An in-process app on ``data_dir``, configured by environment variables as a user would."""
    app = App(
        Settings.from_env(
            env or {}, **{"data_dir": data_dir, "shipper": "off", "flush_interval_secs": 0.2, **overrides}
        )
    )
    await app.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield Hogflare(app, client)
    finally:
        await app.shutdown()
