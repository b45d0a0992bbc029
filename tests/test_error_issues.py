"""Hogflare's error-issue status change: `PATCH|POST /errors/api/issues/<fingerprint>/status`.

An operator marks an error-tracking issue active, resolved or ignored; the change is a
`$error_issue_status` row hogflare writes itself (`source` `hogflare`), which models can tell
from the same event sent by a client. Read back from the lake, and from the events stream.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Hogflare, event, make_settings, running
from tests.helpers.stream import FakeStream

TOKEN = "phc_issues"
ADMIN = "admin-s3cret"
PATH = "/errors/api/issues/fp-123/status"


def change(status: Any = "resolved", **fields: Any) -> dict[str, Any]:
    return {"status": status, "api_key": TOKEN, **fields}


async def test_off_without_a_token(hogflare: Hogflare) -> None:
    response = await hogflare.post(PATH, change(), headers={"x-hogflare-debug-token": "anything"})
    assert (response.status_code, response.json()["error"]) == (401, "error tracking status updates are disabled")
    assert hogflare.rows() == []


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-hogflare-debug-token": "wrong"}, {"authorization": "Bearer wrong"}, {"authorization": ADMIN}],
)
async def test_a_wrong_token_is_refused(tmp_path: Path, headers: dict[str, str]) -> None:
    async with running(make_settings(tmp_path / "data", error_admin_token=ADMIN)) as hogflare:
        response = await hogflare.post(PATH, change(), headers=headers)
        assert (response.status_code, response.json()["error"]) == (401, "invalid error tracking admin token")
        assert hogflare.rows() == []


@pytest.mark.parametrize("method", ["PATCH", "POST"])
async def test_a_change_lands_as_hogflares_own_row(tmp_path: Path, method: str) -> None:
    settings = make_settings(tmp_path / "data", error_admin_token=ADMIN, team_id=4)
    async with running(settings) as hogflare:
        body = change(" Resolved ", actor=" ops@acme.io ", reason="")
        response = await hogflare.client.request(
            method, PATH + "/", json=body, headers={"authorization": f"Bearer {ADMIN}"}
        )
        assert (response.status_code, response.json()) == (200, {"status": 1})
        [row] = hogflare.rows()
        assert row["event"] == "$error_issue_status"
        assert row["source"] == "hogflare"
        assert row["distinct_id"] == "hogflare:error_issue:fp-123"
        assert row["properties"] == {"fingerprint": "fp-123", "status": "resolved", "actor": "ops@acme.io"}
        assert (row["api_key"], row["team_id"]) == (TOKEN, 4)
        assert (row["person_id"], row["person_properties"]) == (None, None)
        assert abs(row["timestamp"] - datetime.now(UTC)) < timedelta(minutes=1)


async def test_the_debug_token_allows_it_as_in_hogflare(tmp_path: Path) -> None:
    """Without a token of its own, `PERSON_DEBUG_TOKEN` allows the route, in Hogflare's header;
    a client sending the same event through capture gets a row that says `posthog`."""
    async with running(make_settings(tmp_path / "data", person_debug_token=ADMIN)) as hogflare:
        response = await hogflare.post(PATH, change("ignored"), headers={"x-hogflare-debug-token": f" {ADMIN} "})
        assert response.status_code == 200
        forged = event("$error_issue_status", "hogflare:error_issue:fp-123", properties={"status": "active"})
        assert (await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [forged]})).status_code == 200
        rows = hogflare.rows(order="source")
        assert [(row["source"], row["properties"]["status"]) for row in rows] == [
            ("hogflare", "ignored"),
            ("posthog", "active"),
        ]


async def test_its_own_token_replaces_the_debug_token(tmp_path: Path) -> None:
    """With `HOGFLARE_ERROR_ADMIN_TOKEN` set, the debug token no longer allows status changes;
    either header may carry the right one."""
    settings = make_settings(tmp_path / "data", error_admin_token=ADMIN, person_debug_token="debug")
    async with running(settings) as hogflare:
        debug = await hogflare.post(PATH, change(), headers={"x-hogflare-debug-token": "debug"})
        assert debug.status_code == 401
        both = {"x-hogflare-debug-token": "debug", "authorization": f"Bearer {ADMIN}"}
        assert (await hogflare.post(PATH, change(), headers=both)).status_code == 200
        assert len(hogflare.rows()) == 1


async def test_a_fingerprint_may_hold_an_escaped_slash(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path / "data", error_admin_token=ADMIN)) as hogflare:
        path = "/errors/api/issues/TypeError%2Fapp.js%3A12/status"
        response = await hogflare.post(path, change(), headers={"x-hogflare-debug-token": ADMIN})
        assert response.status_code == 200
        [row] = hogflare.rows()
        assert row["properties"]["fingerprint"] == "TypeError/app.js:12"
        assert row["distinct_id"] == "hogflare:error_issue:TypeError/app.js:12"


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (PATH, change(" Reopened"), "unsupported error issue status reopened (one of active, resolved, ignored)"),
        (PATH, {"status": "resolved"}, "api_key (the project token) is required"),
        (PATH, change(api_key=" "), "api_key (the project token) is required"),
        (PATH, {"api_key": TOKEN}, "invalid status change: Object missing required field `status`"),
        (PATH, b"{not json", "invalid status change: JSON is malformed: object keys must be strings (byte 1)"),
        (PATH, change(status=3), "invalid status change: Expected `str`, got `int` - at `$.status`"),
        ("/errors/api/issues/%20/status", change(), "the issue fingerprint is empty"),
    ],
)
async def test_bad_changes_are_400_and_store_nothing(tmp_path: Path, path: str, body: Any, message: str) -> None:
    async with running(make_settings(tmp_path / "data", error_admin_token=ADMIN)) as hogflare:
        response = await hogflare.post(path, body, headers={"x-hogflare-debug-token": ADMIN})
        assert (response.status_code, response.json()["error"]) == (400, message)
        assert hogflare.rows() == []


async def test_a_token_capture_refuses_is_401(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", error_admin_token=ADMIN, project_tokens=("phc_other",))
    async with running(settings) as hogflare:
        headers = {"x-hogflare-debug-token": ADMIN}
        assert (await hogflare.post(PATH, change(), headers=headers)).status_code == 401
        assert (await hogflare.post(PATH, change(api_key="phx_personal"), headers=headers)).status_code == 401
        assert hogflare.rows() == []


async def test_other_methods_and_paths(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path / "data", error_admin_token=ADMIN)) as hogflare:
        headers = {"x-hogflare-debug-token": ADMIN}
        assert (await hogflare.client.get(PATH, headers=headers)).status_code == 405
        assert (await hogflare.post("/errors/api/issues/a/b/status", change(), headers=headers)).status_code == 404
        assert (await hogflare.post("/errors/api/issues/fp/state", change(), headers=headers)).status_code == 404


async def test_the_row_reaches_the_events_stream(tmp_path: Path, fake: FakeStream) -> None:
    settings = make_settings(tmp_path / "data", error_admin_token=ADMIN, pipeline_endpoint=f"{fake.url}/")
    async with running(settings) as hogflare:
        response = await hogflare.post(PATH, change(), headers={"x-hogflare-debug-token": ADMIN})
        assert response.status_code == 200
        hogflare.rows()  # ships to every sink
        [row] = [row for row in fake.events() if row["event"] == "$error_issue_status"]
        assert (row["source"], row["distinct_id"]) == ("hogflare", "hogflare:error_issue:fp-123")


async def test_a_browser_may_patch_it_from_another_origin(hogflare: Hogflare) -> None:
    """A browser sends PATCH cross-origin only once the preflight's answer names it."""
    preflight = {"origin": "https://admin.example", "access-control-request-method": "PATCH"}
    response = await hogflare.client.options(PATH, headers=preflight)
    assert response.status_code == 200
    assert "PATCH" in response.headers["access-control-allow-methods"].split(", ")
    capture = await hogflare.client.options("/batch/", headers=preflight)
    assert capture.headers["access-control-allow-methods"] == "GET, POST, OPTIONS"
