"""PostHog's capture v1 (``POST /i/v1/analytics/events``), which posthog-python and posthog-node
use with ``POSTHOG_CAPTURE_MODE=v1``: in process for its rules, then with the real SDKs against a
running server, the rows read back from the lake."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import posthog
import pytest
import zstandard
from posthog.capture_v1 import CaptureV1Error

from hogflare.capture import decodes_slowly
from tests.conftest import TOKEN, Hogflare
from tests.helpers.sdk import run_script
from tests.helpers.server import Server, answered, metric, wait_for_rows

PATH = "/i/v1/analytics/events"


def v1_event(name: str = "v1 event", distinct_id: Any = "user-1", **fields: Any) -> dict[str, Any]:
    return {
        "event": name,
        "uuid": str(uuid.uuid4()),
        "distinct_id": distinct_id,
        "timestamp": datetime.now(UTC).isoformat(),
        "options": {},
        "properties": {},
        **fields,
    }


def headers(**extra: str) -> dict[str, str]:
    return {
        "authorization": f"Bearer {TOKEN}",
        "content-type": "application/json",
        "posthog-sdk-info": "posthog-python/7.91.1",
        "posthog-attempt": "1",
        "posthog-request-id": str(uuid.uuid4()),
        "posthog-request-timestamp": datetime.now(UTC).isoformat(),
        **extra,
    }


async def send(hogflare: Hogflare, batch: list[dict[str, Any]], **extra: str) -> Any:
    body = {"created_at": datetime.now(UTC).isoformat(), "batch": batch}
    return await hogflare.post(PATH, body, headers=headers(**extra))


@pytest.mark.parametrize("slash", ["", "/"])
async def test_events_land_with_what_the_headers_and_options_say(hogflare: Hogflare, slash: str) -> None:
    kept = v1_event(
        "$pageview",
        session_id="sess-1",
        window_id="win-1",
        options={"process_person_profile": False, "product_tour_id": "tour-1"},
        properties={"plan": "pro", "$lib": "overridden"},
    )
    response = await hogflare.post(
        PATH + slash,
        {"created_at": datetime.now(UTC).isoformat(), "batch": [kept]},
        headers=headers(**{"posthog-request-id": "0190a0c4-7b2e-7c3a-9f00-00000000abcd"}),
    )
    assert response.status_code == 200
    assert response.json() == {"results": {kept["uuid"]: {"result": "ok"}}}
    assert response.headers["posthog-request-id"] == "0190a0c4-7b2e-7c3a-9f00-00000000abcd"
    [row] = hogflare.rows()
    assert row["uuid"] == kept["uuid"]
    assert row["api_key"] == TOKEN
    props = row["properties"]
    assert (props["$session_id"], props["$window_id"], props["$product_tour_id"]) == ("sess-1", "win-1", "tour-1")
    assert (props["$lib"], props["$lib_version"], props["plan"]) == ("posthog-python", "7.91.1", "pro")
    assert props["$process_person_profile"] is False


def dropped(metrics: str, reason: str) -> float:
    return metric(metrics, f'hogflare_events_dropped_total{{reason="{reason}"}}')


async def test_a_bad_event_is_dropped_alone_named_and_counted(hogflare: Hogflare) -> None:
    before = (await hogflare.client.get("/metrics")).text
    good = v1_event("good")
    # Answered under the uuid as written: the SDKs look their events up by it.
    nameless = v1_event("", uuid=str(uuid.uuid4()).upper())
    untimed = v1_event("untimed", timestamp="last tuesday")
    response = await send(hogflare, [good, nameless, untimed])
    assert response.status_code == 200
    assert response.json()["results"] == {
        good["uuid"]: {"result": "ok"},
        nameless["uuid"]: {"result": "drop", "details": "missing_event_name"},
        untimed["uuid"]: {"result": "drop", "details": "invalid_event_timestamp"},
    }
    assert [row["event"] for row in hogflare.rows()] == ["good"]
    after = (await hogflare.client.get("/metrics")).text
    for reason in ("missing_event_name", "invalid_event_timestamp"):
        assert dropped(after, reason) == dropped(before, reason) + 1


async def test_a_performance_event_is_answered_dropped_and_counted_as_filtered(hogflare: Hogflare) -> None:
    """Capture v1 names a `$performance_event` dropped, as PostHog's does; like the other routes,
    which discard it without a word, hogflare counts it among the filtered items, not the drops."""
    before = (await hogflare.client.get("/metrics")).text
    performance = v1_event("$performance_event")
    response = await send(hogflare, [performance, v1_event("good")])
    assert response.json()["results"][performance["uuid"]] == {"result": "drop", "details": "dropped_performance_event"}
    after = (await hogflare.client.get("/metrics")).text
    assert metric(after, "hogflare_events_filtered_total") == metric(before, "hogflare_events_filtered_total") + 1
    assert dropped(after, "dropped_performance_event") == dropped(before, "dropped_performance_event") == 0
    assert [row["event"] for row in hogflare.rows()] == ["good"]


async def test_a_retry_adds_no_row(hogflare: Hogflare) -> None:
    event = v1_event("retried")
    for _ in range(2):
        response = await send(hogflare, [event])
        assert response.json()["results"][event["uuid"]] == {"result": "ok"}
    assert len(hogflare.rows()) == 1


async def test_the_clock_skew_is_corrected_from_the_request_timestamp(hogflare: Hogflare) -> None:
    # The client's clock runs a day behind the server's.
    behind = datetime.now(UTC) - timedelta(days=1)
    event = v1_event("skewed", timestamp=(behind - timedelta(minutes=5)).isoformat())
    response = await send(hogflare, [event], **{"posthog-request-timestamp": behind.isoformat()})
    assert response.status_code == 200
    [row] = hogflare.rows()
    stored = row["timestamp"].replace(tzinfo=UTC)
    assert abs(stored - (datetime.now(UTC) - timedelta(minutes=5))) < timedelta(seconds=30)


@pytest.mark.parametrize(
    ("auth", "status", "code"),
    [
        (None, 401, "invalid_api_token"),
        ("Basic abc", 400, "invalid_request"),
        ("Bearer phx_personal", 401, "invalid_api_token"),
    ],
)
async def test_the_token_is_a_bearers(hogflare: Hogflare, auth: str | None, status: int, code: str) -> None:
    extra = headers()
    del extra["authorization"]
    if auth is not None:
        extra["authorization"] = auth
    body = {"created_at": datetime.now(UTC).isoformat(), "batch": [v1_event()]}
    response = await hogflare.post(PATH, body, headers=extra)
    assert response.status_code == status
    assert response.json()["error"] == code
    assert response.json()["error_description"]
    assert hogflare.rows() == []


async def test_a_batch_that_breaks_the_schema_is_refused_whole(hogflare: Hogflare) -> None:
    twice = v1_event()
    response = await send(hogflare, [twice, dict(twice, event="again")])
    assert response.status_code == 400
    assert "repeats" in response.json()["error_description"]
    response = await send(hogflare, [v1_event(distinct_id=42)])
    assert response.status_code == 400
    assert "distinct_id must be a string" in response.json()["error_description"]
    for method in ("GET", "PUT"):
        refused = await hogflare.client.request(method, PATH)
        assert (refused.status_code, refused.json()["error"]) == (405, "method_not_allowed")
    assert hogflare.rows() == []


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
async def test_packed_bodies(hogflare: Hogflare, encoding: str) -> None:
    event = v1_event("packed")
    text = json.dumps({"created_at": datetime.now(UTC).isoformat(), "batch": [event]}).encode()
    body = gzip.compress(text) if encoding == "gzip" else zstandard.ZstdCompressor().compress(text)
    response = await hogflare.post(PATH, body, headers=headers(**{"content-encoding": encoding}))
    assert response.json() == {"results": {event["uuid"]: {"result": "ok"}}}
    # The other capture routes read zstd too.
    legacy = zstandard.ZstdCompressor().compress(
        json.dumps({"api_key": TOKEN, "batch": [{"event": "v0", "distinct_id": "u"}]}).encode()
    )
    response = await hogflare.post("/batch", legacy, headers={"content-encoding": "zstd"})
    assert response.json() == {"status": 1}
    assert sorted(row["event"] for row in hogflare.rows()) == ["packed", "v0"]


# -- the real SDKs, against a running server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("v1") / "data") as running:
        yield running


def v1_requests(server: Server) -> float:
    return answered(server, PATH)


@pytest.mark.server
@pytest.mark.sdk
@pytest.mark.parametrize("compression", ["none", "gzip", "deflate", "zstd"])
def test_posthog_python_in_capture_v1(server: Server, compression: str) -> None:
    run_id = uuid.uuid4().hex
    failures: list[Exception] = []
    before = v1_requests(server)
    client = posthog.Posthog(
        TOKEN,
        host=server.url,
        capture_mode="v1",
        capture_compression=compression,
        on_error=lambda error, _batch: failures.append(error),
    )
    try:
        client.capture("v1 python", distinct_id=f"v1-{run_id}", properties={"run_id": run_id, "$set": {"plan": "pro"}})
        client.capture("v1 python", distinct_id=f"v1-{run_id}", properties={"run_id": run_id, "$session_id": "s-1"})
        client.capture("", distinct_id=f"v1-{run_id}", properties={"run_id": run_id})
        client.flush()
    finally:
        client.shutdown()
    # The nameless event is the server's to refuse, and the SDK hears of it, for that event only.
    assert len(failures) == 1
    assert isinstance(failures[0], CaptureV1Error)
    assert [details for _, details in failures[0].drops] == ["missing_event_name"]
    assert v1_requests(server) > before
    rows = wait_for_rows(server.data_dir, f"select * from events where properties like '%{run_id}%'", 2)
    props = [json.loads(row["properties"]) for row in rows]
    assert {p["$lib"] for p in props} == {"posthog-python"}
    assert sorted(p.get("$session_id", "") for p in props) == ["", "s-1"]
    assert json.loads(rows[-1]["person_properties"])["plan"] == "pro"


@pytest.mark.server
@pytest.mark.sdk
def test_posthog_node_in_capture_v1(server: Server) -> None:
    run_id = uuid.uuid4().hex
    before = v1_requests(server)
    sent = run_script("node_sdk.mjs", server.url, TOKEN, "persons", run_id, env={"POSTHOG_CAPTURE_MODE": "v1"})
    assert sent["errors"] == []
    assert v1_requests(server) > before
    sql = f"select * from events where distinct_id in ('{sent['user_id']}', '{sent['alias_id']}') order by timestamp"
    rows = wait_for_rows(server.data_dir, sql, 4)
    assert {json.loads(row["properties"])["$lib"] for row in rows} == {"posthog-node"}
    # identify, alias and a group reached the person store as they do over /batch.
    assert len({row["person_id"] for row in rows}) == 1
    ids = ", ".join(f"'{sent[key]}'" for key in ("anon_id", "user_id", "alias_id"))
    wait_for_rows(server.data_dir, f"select * from persons_latest where list_has_all(distinct_ids, [{ids}])", 1)


def test_bodies_that_do_not_say_how_far_they_inflate_are_decoded_off_the_event_loop() -> None:
    small = b"x" * 2048
    assert decodes_slowly(small, "zstd")
    assert decodes_slowly(small, " BR ")
    assert not decodes_slowly(small, "gzip")
    assert not decodes_slowly(b'{"event": "tiny"}', "zstd")
