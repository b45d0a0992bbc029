"""PostHog's private API as integrators read it with a personal API key: the project
(``/api/projects/@current/``) and a person by distinct id, under ``/api/projects/`` and
``/api/environments/``. The persons are the ones the capture routes made, read at once."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import posthog
import pytest

from hogflare.app import route_label
from tests.conftest import TOKEN, Hogflare, make_settings, running
from tests.helpers.persons import capture, identify, person_of, person_uuid, send
from tests.helpers.server import Server

PERSONAL_KEY = "phx_private_api_test"
FLAGS_KEY = "phx_flags_only"
SECRET_KEY = "phs_private_api_test"
AUTH = {"authorization": f"Bearer {PERSONAL_KEY}"}
OTHER_TOKEN = "phc_second_project"


@pytest.fixture
async def hogflare(tmp_path: Path) -> Any:
    settings = make_settings(
        tmp_path / "data",
        project_tokens=(TOKEN, OTHER_TOKEN),
        team_id=42,
        person_api_keys=(PERSONAL_KEY,),
        personal_api_keys=(FLAGS_KEY,),
        project_secret_keys=(SECRET_KEY,),
    )
    async with running(settings) as app:
        yield app


async def get(hogflare: Hogflare, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return await hogflare.client.get(path, headers=AUTH if headers is None else headers)


# --- the project ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/projects/@current/", "/api/projects/@current", "/api/environments/@current/", "/api/projects/42/"]
)
async def test_the_project_names_its_id_and_token(hogflare: Hogflare, path: str) -> None:
    response = await get(hogflare, path)
    assert response.status_code == 200, response.text
    project = response.json()
    assert project["id"] == 42
    assert project["project_id"] == 42
    assert project["api_token"] == TOKEN
    assert project["timezone"] == "UTC"
    assert uuid.UUID(project["uuid"])
    assert uuid.UUID(project["organization"])
    # The same object every time, and for either scope.
    assert (await get(hogflare, "/api/environments/42")).json() == project


async def test_the_key_may_also_come_in_the_query(hogflare: Hogflare) -> None:
    response = await get(hogflare, f"/api/projects/@current/?personal_api_key={PERSONAL_KEY}", headers={})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("headers", "code", "detail"),
    [
        ({}, "not_authenticated", "Authentication credentials were not provided."),
        ({"authorization": "Bearer phx_wrong"}, "authentication_failed", "Invalid personal API key."),
        # A project secret key opens flag definitions only, as on PostHog.
        ({"authorization": f"Bearer {SECRET_KEY}"}, "authentication_failed", "Invalid project secret API key."),
        # A key for the flag definitions, handed to every server SDK, reads no persons.
        ({"authorization": f"Bearer {FLAGS_KEY}"}, "authentication_failed", "Invalid personal API key."),
        ({"authorization": f"Bearer {TOKEN}"}, "authentication_failed", "Invalid personal API key."),
    ],
)
async def test_without_a_personal_api_key_it_is_401(
    hogflare: Hogflare, headers: dict[str, str], code: str, detail: str
) -> None:
    for path in ("/api/projects/@current/", "/api/environments/42/persons/?distinct_id=u"):
        response = await get(hogflare, path, headers)
        assert response.status_code == 401
        assert response.json() == {"type": "authentication_error", "code": code, "detail": detail, "attr": None}


async def test_another_project_is_404_and_a_write_is_405(hogflare: Hogflare) -> None:
    for path in ("/api/projects/7/", "/api/environments/7/persons/?distinct_id=u", "/api/projects/042x/"):
        response = await get(hogflare, path)
        assert (response.status_code, response.json()["code"]) == (404, "not_found")
    assert (await get(hogflare, "/api/projects/042/")).json()["id"] == 42
    response = await hogflare.client.post("/api/projects/@current/", headers=AUTH, json={"name": "x"})
    assert (response.status_code, response.json()["code"]) == (405, "method_not_allowed")
    assert response.headers["allow"] == "GET, HEAD, OPTIONS"
    # Without a key a write is refused for the key first, as PostHog checks it first.
    response = await hogflare.client.delete("/api/projects/@current/")
    assert (response.status_code, response.json()["code"]) == (401, "not_authenticated")
    response = await hogflare.client.head("/api/projects/@current/", headers=AUTH)
    assert (response.status_code, response.content) == (200, b"")


async def test_no_person_api_key_configured_refuses_every_key(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path / "data", personal_api_keys=(PERSONAL_KEY,))) as hogflare:
        response = await get(hogflare, "/api/projects/@current/")
        assert (response.status_code, response.json()["code"]) == (401, "authentication_failed")


# --- persons -------------------------------------------------------------------------------------


async def test_a_person_is_read_by_any_of_its_distinct_ids(hogflare: Hogflare) -> None:
    anon = "0193f0a4-7a1e-7c3b-9d2e-5b8f6a4c3d21"
    await send(
        hogflare,
        capture(anon, {"$set_once": {"first_source": "ad"}, "$set": {"plan": "free"}}),
        identify("ada", anon, {"$set": {"email": "ada@example.com", "plan": "pro", "timezone": "Europe/Paris"}}),
    )
    by_user = (await get(hogflare, "/api/environments/42/persons/?distinct_id=ada")).json()
    by_anon = (await get(hogflare, f"/api/projects/@current/persons/?distinct_id={anon}")).json()
    assert by_user == by_anon
    assert (by_user["next"], by_user["previous"]) == (None, None)
    [person] = by_user["results"]
    # As on PostHog, a new person records the event that made it.
    assert uuid.UUID(person["properties"].pop("$creator_event_uuid"))
    assert person["properties"] == {
        "first_source": "ad",
        "plan": "pro",
        "email": "ada@example.com",
        "timezone": "Europe/Paris",
    }
    # Distinct ids that look like uuids come last, as PostHog lists them.
    assert person["distinct_ids"] == ["ada", anon]
    assert person["name"] == "ada@example.com"
    assert person["is_identified"] is True
    # The same person the lake holds.
    row = person_of(hogflare, "ada")
    assert person["uuid"] == row["person_id"] == person_uuid(anon, 42)
    assert person["id"] == row["person_int_id"]


async def test_a_set_is_readable_as_soon_as_it_is_acknowledged(hogflare: Hogflare) -> None:
    for plan in ("free", "pro", "team"):
        await send(hogflare, capture("bo", {"$set": {"plan": plan}}))
        [person] = (await get(hogflare, "/api/environments/42/persons/?distinct_id=bo")).json()["results"]
        assert person["properties"]["plan"] == plan
    # Without an email or a name, a person is named by a distinct id.
    assert person["name"] == "bo"


async def test_an_unknown_distinct_id_gives_no_results(hogflare: Hogflare) -> None:
    response = await get(hogflare, "/api/environments/42/persons/?distinct_id=nobody")
    assert (response.status_code, response.json()["results"]) == (200, [])
    # A personless event makes no person.
    await send(hogflare, capture("ghost", {"$process_person_profile": False}))
    assert (await get(hogflare, "/api/environments/42/persons/?distinct_id=ghost")).json()["results"] == []


async def test_every_configured_project_token_is_looked_in_and_the_first_wins(hogflare: Hogflare) -> None:
    for token, plan in ((OTHER_TOKEN, "second"), (OTHER_TOKEN, "second"), (TOKEN, "first")):
        body = {"api_key": token, "batch": [capture("cy" if plan == "first" else "dot", {"$set": {"plan": plan}})]}
        assert (await hogflare.post("/batch/", body)).status_code == 200
    [person] = (await get(hogflare, "/api/environments/42/persons/?distinct_id=dot")).json()["results"]
    assert person["properties"]["plan"] == "second"
    # The same distinct id in both projects: one person, the first token's, as PostHog has one per project.
    body = {"api_key": OTHER_TOKEN, "batch": [capture("cy", {"$set": {"plan": "second"}})]}
    assert (await hogflare.post("/batch/", body)).status_code == 200
    answer = await get(hogflare, f"/api/environments/42/persons/?distinct_id=cy&personal_api_key={PERSONAL_KEY}", {})
    [person] = answer.json()["results"]
    assert person["properties"]["plan"] == "first"


async def test_anonymous_ids_are_listed_last_as_posthog_tells_them(hogflare: Hogflare) -> None:
    # posthog-js's ids before uuids: five dash-separated runs of lower-case letters and digits.
    old_js = "17e2c5e0b1f5e6-0d8a5b7c9e4e5f-3e6b6b4e-1fa400-17e2c5e0b1f5e6"
    upper = "0193F0A4-7A1E-7C3B-9D2E-5B8F6A4C3D21"
    await send(hogflare, capture(old_js), identify(upper, old_js), capture(upper, {"$set": {"name": ""}}))
    [person] = (await get(hogflare, f"/api/environments/42/persons/?distinct_id={upper}")).json()["results"]
    # An upper-case uuid is not what PostHog takes for anonymous; an empty name names nobody.
    assert person["distinct_ids"] == [upper, old_js]
    assert person["name"] == upper


async def test_a_persons_list_without_a_distinct_id_says_what_to_use(hogflare: Hogflare) -> None:
    response = await get(hogflare, "/api/environments/42/persons/?email=ada@example.com")
    assert response.status_code == 400
    answer = response.json()
    assert (answer["type"], answer["attr"]) == ("validation_error", "distinct_id")
    assert "persons_latest" in answer["detail"]


async def test_without_configured_tokens_any_project_is_read(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", person_api_keys=(PERSONAL_KEY,))
    async with running(settings) as hogflare:
        await send(hogflare, capture("dee", {"$set": {"plan": "pro"}}))
        project = (await get(hogflare, "/api/projects/@current/")).json()
        assert (project["id"], project["api_token"]) == (1, None)
        [person] = (await get(hogflare, "/api/environments/1/persons/?distinct_id=dee")).json()["results"]
        assert person["properties"]["plan"] == "pro"


# --- as Hogsend reads it, against a real server ----------------------------------------------------


@pytest.mark.server
def test_hogsend_discovers_the_project_and_reads_a_person_posthog_python_wrote(tmp_path: Path) -> None:
    env = {"HOGFLARE_PROJECT_TOKENS": TOKEN, "POSTHOG_TEAM_ID": "5", "HOGFLARE_PERSON_API_KEYS": PERSONAL_KEY}
    with Server(tmp_path / "data", env=env) as server:
        client = posthog.Posthog(TOKEN, host=server.url, sync_mode=True)
        try:
            client.capture("signed up", distinct_id="anon-1")
            client.capture(
                "$identify",
                distinct_id="contact-7",
                properties={"$anon_distinct_id": "anon-1", "$set": {"timezone": "Asia/Tokyo"}},
            )
            client.set(distinct_id="contact-7", properties={"plan": "pro"})
        finally:
            client.shutdown()
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=10) as http:
            # No OAuth here: Hogsend falls back to the personal key on a 404.
            assert http.get("/.well-known/oauth-authorization-server").status_code == 404
            # No destinations either: a 404 on the collection tells Hogsend to be set up by hand.
            hog_functions = http.get("/api/environments/5/hog_functions/", params={"type": "destination"})
            assert hog_functions.status_code == 404
            project = http.get("/api/projects/@current/").json()
            assert (project["id"], project["api_token"]) == (5, TOKEN)
            answer = http.get(f"/api/environments/{project['id']}/persons/", params={"distinct_id": "contact-7"})
            assert answer.status_code == 200, answer.text
            properties = answer.json()["results"][0]["properties"]
            assert properties["timezone"] == "Asia/Tokyo"
            assert properties["plan"] == "pro"
            anon = http.get(f"/api/environments/{project['id']}/persons/", params={"distinct_id": "anon-1"}).json()
            assert anon["results"][0]["uuid"] == answer.json()["results"][0]["uuid"]


def test_metrics_count_these_routes_under_two_labels() -> None:
    assert route_label("/api/projects/@current/") == "/api/projects/:project"
    assert route_label("/api/environments/42/persons/") == "/api/projects/:project/persons"
    # Other paths beneath stay "other", so scanners add no series.
    assert route_label("/api/projects/42/insights/") == "other"
    assert route_label("/api/projects/") == "other"
