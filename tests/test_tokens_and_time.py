"""Project tokens and event timestamps, PostHog's rules, checked against the rows in the lake."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TOKEN, Err, Hogflare, event, make_settings, running

UTC = dt.UTC


def iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# -- tokens ---------------------------------------------------------------------------------------

TOKEN_CASES: list[tuple[str, dict[str, Any], dict[str, str], str | Err]] = [
    ("envelope api_key", {"api_key": "phc_env", "batch": [event()]}, {}, "phc_env"),
    ("envelope token", {"token": "phc_env", "batch": [event()]}, {}, "phc_env"),
    ("event token", {"batch": [event(token="phc_evt")]}, {}, "phc_evt"),
    ("event $token", {"batch": [event(**{"$token": "phc_evt"})]}, {}, "phc_evt"),
    ("event api_key", {"batch": [event(api_key="phc_evt")]}, {}, "phc_evt"),
    ("properties.token", {"batch": [event(properties={"token": "phc_props"})]}, {}, "phc_props"),
    ("header", {"batch": [event()]}, {"x-posthog-api-key": "phc_header"}, "phc_header"),
    ("trimmed", {"api_key": "  phc_pad  ", "batch": [event()]}, {}, "phc_pad"),
    ("missing", {"batch": [event()]}, {}, Err(401, "without an api_key")),
    ("personal key", {"api_key": "phx_personal", "batch": [event()]}, {}, Err(401, "personal api keys")),
    ("too long", {"api_key": "p" * 65, "batch": [event()]}, {}, Err(401, "longer than 64")),
    ("nul byte", {"api_key": "phc_\u0000x", "batch": [event()]}, {}, Err(401, "null byte")),
    ("not ascii", {"api_key": "phc_ü", "batch": [event()]}, {}, Err(401, "not ascii")),
    (
        "mixed tokens",
        {"batch": [event(token="phc_a"), event(token="phc_b")]},
        {},
        Err(401, "inconsistent api_key"),
    ),
]


@pytest.mark.parametrize(("name", "body", "headers", "expected"), TOKEN_CASES, ids=[c[0] for c in TOKEN_CASES])
async def test_token_rules(
    hogflare: Hogflare, name: str, body: dict[str, Any], headers: dict[str, str], expected: str | Err
) -> None:
    response = await hogflare.post("/batch/", body, headers=headers)
    if isinstance(expected, Err):
        assert response.status_code == expected.status
        assert expected.message in response.json()["error"]
        assert hogflare.rows() == []
    else:
        assert response.status_code == 200, response.text
        assert [row["api_key"] for row in hogflare.rows()] == [expected]


async def test_project_token_allowlist(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path / "data", project_tokens=("phc_allowed",))) as hogflare:
        allowed = await hogflare.client.post("/batch/", json={"api_key": "phc_allowed", "batch": [event()]})
        other = await hogflare.client.post("/batch/", json={"api_key": "phc_other", "batch": [event()]})
        assert allowed.status_code == 200
        assert other.status_code == 401
        assert "not a project token" in other.json()["error"]
        assert [row["api_key"] for row in hogflare.rows()] == ["phc_allowed"]


# -- timestamps -----------------------------------------------------------------------------------


def close(a: dt.datetime, b: dt.datetime, seconds: float = 5.0) -> bool:
    return abs((a - b).total_seconds()) < seconds


async def test_clock_skew_is_corrected_with_the_envelope_sent_at(hogflare: Hogflare) -> None:
    # The client's clock runs 2 hours behind: it says the event happened a minute before sending.
    client_now = dt.datetime.now(UTC) - dt.timedelta(hours=2)
    body = {
        "api_key": TOKEN,
        "sent_at": iso(client_now),
        "batch": [event(timestamp=iso(client_now - dt.timedelta(minutes=1)))],
    }
    await hogflare.post("/batch/", body)
    row = hogflare.rows()[0]
    assert close(row["timestamp"], dt.datetime.now(UTC) - dt.timedelta(minutes=1))
    assert row["properties"]["$sent_at"].startswith(client_now.strftime("%Y-%m-%dT%H:%M"))


@pytest.mark.parametrize(("path", "envelope"), [("/batch/", True), ("/e/", False), ("/i/v0/e/", False)])
async def test_an_events_own_sent_at_is_not_read(hogflare: Hogflare, path: str, envelope: bool) -> None:
    """As on PostHog, only the request's `sent_at` corrects clocks: an import that kept each
    event's original `sent_at` keeps its timestamps."""
    stamp = dt.datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    item = event(token=TOKEN, timestamp=iso(stamp), sent_at=iso(stamp + dt.timedelta(seconds=1)))
    body: Any = {"api_key": TOKEN, "historical_migration": True, "batch": [item]} if envelope else [item]
    assert (await hogflare.post(path, body)).status_code == 200
    assert hogflare.rows()[0]["timestamp"] == stamp


async def test_ignore_sent_at_keeps_the_client_timestamp(hogflare: Hogflare) -> None:
    stamp = dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    item = event(timestamp=iso(stamp), properties={"$ignore_sent_at": True})
    await hogflare.post("/batch/", {"api_key": TOKEN, "sent_at": iso(dt.datetime.now(UTC)), "batch": [item]})
    assert hogflare.rows()[0]["timestamp"] == stamp


async def test_offset_means_milliseconds_before_now(hogflare: Hogflare) -> None:
    await hogflare.post("/e/", [event(token=TOKEN, offset=60_000)])
    assert close(hogflare.rows()[0]["timestamp"], dt.datetime.now(UTC) - dt.timedelta(minutes=1))


async def test_underscore_query_is_sent_at_in_milliseconds(hogflare: Hogflare) -> None:
    client_now = dt.datetime.now(UTC) - dt.timedelta(hours=3)
    stamp = client_now - dt.timedelta(seconds=30)
    millis = int(client_now.timestamp() * 1000)
    await hogflare.post(f"/e/?_={millis}", [event(token=TOKEN, timestamp=iso(stamp))])
    assert close(hogflare.rows()[0]["timestamp"], dt.datetime.now(UTC) - dt.timedelta(seconds=30))


async def test_far_future_is_clamped_to_now(hogflare: Hogflare) -> None:
    future = dt.datetime.now(UTC) + dt.timedelta(days=3)
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event(timestamp=iso(future))]})
    assert close(hogflare.rows()[0]["timestamp"], dt.datetime.now(UTC))


@pytest.mark.parametrize(
    "value",
    [
        "2024-05-01T12:00:00Z",
        "2024-05-01T12:00:00.000+00:00",
        "2024-05-01T14:00:00+02",
        "2024-05-01 12:00:00",
        "2024-05-01T12:00:00",
        1714564800000,
        "1714564800000",
        1714564800,
    ],
)
async def test_lenient_timestamp_formats(hogflare: Hogflare, value: str | int) -> None:
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event(timestamp=value)]})
    assert hogflare.rows()[0]["timestamp"] == dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


async def test_unparseable_timestamp_falls_back_to_now_and_the_event_is_kept(hogflare: Hogflare) -> None:
    response = await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event(timestamp="last tuesday")]})
    assert response.status_code == 200
    assert close(hogflare.rows()[0]["timestamp"], dt.datetime.now(UTC))


@pytest.mark.parametrize(
    "fields",
    [{"offset": 1e30}, {"offset": -1e30}, {"timestamp": "99999-01-01"}],
)
async def test_absurd_times_fall_back_to_now(hogflare: Hogflare, fields: dict[str, Any]) -> None:
    response = await hogflare.post("/e/", [event(token=TOKEN, **fields)])
    assert response.status_code == 200
    assert close(hogflare.rows()[0]["timestamp"], dt.datetime.now(UTC))


async def test_years_before_the_lakes_first_become_the_epoch_and_the_rest_still_ships(hogflare: Hogflare) -> None:
    """PostHog maps years outside 0 to 9999 to the epoch; year 0 too here, since the lake's
    timestamps start at year 1 and one row it cannot take would hold back every row after it."""
    items = [event(timestamp="0000-06-01T00:00:00Z"), event(timestamp="0001-01-01T00:00:00Z")]
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": items})
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event(timestamp="2024-05-01T12:00:00Z")]})
    assert sorted(row["timestamp"] for row in hogflare.rows()) == [
        dt.datetime(1, 1, 1, tzinfo=UTC),
        dt.datetime(1970, 1, 1, tzinfo=UTC),
        dt.datetime(2024, 5, 1, 12, tzinfo=UTC),
    ]


async def test_created_at_is_the_server_receive_time(hogflare: Hogflare) -> None:
    stamp = dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event(timestamp=iso(stamp))]})
    row = hogflare.rows()[0]
    assert close(row["created_at"], dt.datetime.now(UTC))
    assert row["timestamp"] == stamp


async def test_timestamp_partitions_by_day(hogflare: Hogflare) -> None:
    days = [dt.datetime(2024, 5, day, 9, tzinfo=UTC) for day in (1, 2, 3)]
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event(timestamp=iso(day)) for day in days]})
    hogflare.rows()
    files = sorted(str(path) for path in (hogflare.settings.lake_dir / "warehouse").rglob("timestamp_day=*/*.parquet"))
    assert len(files) == 3
    assert all("timestamp_day=2024-05-0" in path for path in files)
    assert json.dumps([row["timestamp"].day for row in hogflare.rows()]) == "[1, 2, 3]"
