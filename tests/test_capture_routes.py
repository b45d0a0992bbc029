"""Every capture route, with and without its trailing slash, for POST, GET and OPTIONS."""

from __future__ import annotations

import base64
import json

import pytest

from tests.conftest import TOKEN, Hogflare, event, snapshot

ROUTES = ["/e", "/i/v0/e", "/capture", "/track", "/engage", "/batch", "/identify", "/alias", "/groups"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("slash", ["", "/"])
async def test_post_lands_a_row(hogflare: Hogflare, route: str, slash: str) -> None:
    marker = f"{route}{slash}"
    body = {"api_key": TOKEN, "event": "route check", "distinct_id": "user-1", "properties": {"marker": marker}}
    response = await hogflare.post(route + slash, body)
    assert (response.status_code, response.json()) == (200, {"status": 1})
    rows = hogflare.rows()
    assert len(rows) == 1
    assert rows[0]["properties"]["marker"] == marker
    assert rows[0]["api_key"] == TOKEN


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("slash", ["", "/"])
async def test_get_with_data_query(hogflare: Hogflare, route: str, slash: str) -> None:
    payload = base64.b64encode(json.dumps(event("from get", token=TOKEN)).encode()).decode()
    response = await hogflare.client.get(route + slash, params={"data": payload, "ip": "1", "_": "1700000000000"})
    assert response.status_code == 200
    assert [row["event"] for row in hogflare.rows()] == ["from get"]


@pytest.mark.parametrize("route", [*ROUTES, "/s", "/flags", "/decide", "/array/phc_x/config"])
async def test_options_answers_200_with_cors(hogflare: Hogflare, route: str) -> None:
    response = await hogflare.client.options(
        route,
        headers={
            "origin": "https://shop.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, x-custom",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://shop.example"
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["access-control-allow-headers"] == "content-type, x-custom"
    assert "POST" in response.headers["access-control-allow-methods"]


async def test_cors_headers_on_every_answer(hogflare: Hogflare) -> None:
    origin = {"origin": "http://localhost:3000"}
    ok = await hogflare.post("/e/", event(token=TOKEN), headers=origin)
    bad = await hogflare.post("/e/", b"{not json", headers=origin)
    missing = await hogflare.client.get("/nope", headers=origin)
    for response in (ok, bad, missing):
        assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert response.headers["access-control-allow-credentials"] == "true"


async def test_success_is_exactly_200_status_1(hogflare: Hogflare) -> None:
    response = await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event()]})
    assert response.status_code == 200
    assert response.content == b'{"status":1}'
    assert response.headers["content-type"] == "application/json"


async def test_beacon_answers_204(hogflare: Hogflare) -> None:
    response = await hogflare.post("/e/?beacon=1", event(token=TOKEN))
    assert response.status_code == 204
    assert len(hogflare.rows()) == 1


async def test_recordings_are_stored_as_snapshot_rows(hogflare: Hogflare) -> None:
    recording = {**snapshot(), "offset": 100}
    for path in ("/s", "/s/"):
        response = await hogflare.post(path, [recording])
        assert response.status_code == 200
    rows = hogflare.rows()
    assert len(rows) == 2
    assert {row["event"] for row in rows} == {"$snapshot_items"}
    props = rows[0]["properties"]
    assert props["$snapshot_items"] == [{"type": 2, "data": {"node": {}}, "timestamp": 1700000000000}]
    assert props["$session_id"] == "0190aaaa-bbbb-7ccc-8ddd-eeeeffff0000"
    assert props["$window_id"] == "window-1"
    assert props["$snapshot_source"] == "web"
    assert "$snapshot_data" not in props


async def test_a_recording_sent_with_null_window_and_source_gets_their_defaults(hogflare: Hogflare) -> None:
    recording = snapshot()
    recording["properties"].update({"$window_id": None, "$snapshot_source": None, "$lib": None})
    assert (await hogflare.post("/s/", [recording])).status_code == 200
    [row] = hogflare.rows()
    props = row["properties"]
    window = (props["$window_id"], props["$snapshot_source"], props["$lib"])
    assert window == (props["$session_id"], "web", "web")


async def test_recording_without_session_id_is_refused(hogflare: Hogflare) -> None:
    snapshot = {"event": "$snapshot", "properties": {"$snapshot_data": [], "distinct_id": "u", "token": TOKEN}}
    response = await hogflare.post("/s/", [snapshot])
    assert response.status_code == 400
    assert "invalid_session_id" in response.json()["error"]


@pytest.mark.parametrize("path", ["/_health", "/_liveness", "/_livez"])
async def test_liveness(hogflare: Hogflare, path: str) -> None:
    response = await hogflare.client.get(path)
    assert response.status_code == 200


async def test_healthz_is_hogflares_shape(hogflare: Hogflare) -> None:
    response = await hogflare.client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readiness_reports_store_ready(hogflare: Hogflare) -> None:
    response = await hogflare.client.get("/_readiness")
    assert (response.status_code, response.json()) == (200, {"status": "ready"})


async def test_unknown_route_is_404(hogflare: Hogflare) -> None:
    response = await hogflare.client.get("/nowhere")
    assert response.status_code == 404


async def test_put_on_capture_route_is_405(hogflare: Hogflare) -> None:
    response = await hogflare.client.put("/batch/", content=b"[]")
    assert response.status_code == 405
