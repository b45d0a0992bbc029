"""Persons: property updates, identify/alias/merge, personless events and the debug endpoint,
with PostHog's semantics on every route, each case read back from the lake."""

from __future__ import annotations

import datetime as dt
import gc
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TOKEN, Hogflare
from tests.helpers.persons import (
    PERSONLESS_CREATED_AT,
    at,
    capture,
    day,
    event_rows,
    identify,
    person_of,
    person_uuid,
    post_ok,
    send,
    sql,
    started,
)
from tests.helpers.server import Server, wait_for_rows

# --- The Hogflare README's verification flow, on a real server -----------------------------------


@pytest.mark.server
def test_readme_verification_flow(tmp_path: Path) -> None:
    api_key = "phc_verify_20240101000000"
    anon, user = f"{api_key}_anon", f"{api_key}_user"
    with Server(tmp_path / "data") as server:
        bodies = [
            (
                "/capture",
                {
                    "api_key": api_key,
                    "event": "verify-anon-capture",
                    "distinct_id": anon,
                    "properties": {
                        "$set": {"initial_referrer": "docs"},
                        "$set_once": {"first_seen_source": "readme"},
                    },
                },
            ),
            (
                "/identify",
                {
                    "api_key": api_key,
                    "distinct_id": user,
                    "properties": {
                        "$anon_distinct_id": anon,
                        "$set": {"email": "verify@example.com", "plan": "pro"},
                        "$set_once": {"signup_source": "readme"},
                    },
                },
            ),
            (
                "/capture",
                {
                    "api_key": api_key,
                    "event": "verify-identified-capture",
                    "distinct_id": user,
                    "properties": {"button": "verify"},
                },
            ),
        ]
        for path, body in bodies:
            response = httpx.post(f"{server.url}{path}", json=body)
            assert (response.status_code, response.json()) == (200, {"status": 1})
        events = wait_for_rows(
            server.data_dir,
            "select uuid, event, distinct_id, person_id, person_properties from events"
            f" where api_key = {sql(api_key)} order by created_at, timestamp",
            3,
        )
        persons = wait_for_rows(
            server.data_dir,
            "select operation, canonical_distinct_id, person_id, distinct_ids, merged_properties from persons"
            f" where api_key = {sql(api_key)} order by updated_at, version",
            3,
        )

    assert [(row["event"], row["distinct_id"]) for row in events] == [
        ("verify-anon-capture", anon),
        ("$identify", user),
        ("verify-identified-capture", user),
    ]
    person_ids = {row["person_id"] for row in events}
    assert len(person_ids) == 1
    assert None not in person_ids
    assert [(row["operation"], row["canonical_distinct_id"]) for row in persons] == [
        ("capture", anon),
        ("identify", user),
        ("capture", user),
    ]
    assert {row["person_id"] for row in persons} == person_ids
    last = persons[-1]
    assert sorted(last["distinct_ids"]) == sorted([anon, user])
    merged = {
        "initial_referrer": "docs",
        "first_seen_source": "readme",
        "email": "verify@example.com",
        "plan": "pro",
        "signup_source": "readme",
        # As on PostHog, the person records the event that created it.
        "$creator_event_uuid": events[0]["uuid"],
    }
    assert json.loads(last["merged_properties"]) == merged
    assert json.loads(events[-1]["person_properties"]) == merged


# --- A new person ---------------------------------------------------------------------------------


async def test_new_person_row_and_event_fields(hogflare: Hogflare) -> None:
    await send(
        hogflare,
        capture("alice", {"$set": {"plan": "free"}, "$set_once": {"source": "ad", "plan": "trial"}}, timestamp=at(3)),
        capture("bob", timestamp=at(4)),
    )
    event = hogflare.rows("distinct_id = 'alice'")[0]
    assert event["person_id"] == person_uuid("alice")
    assert event["person_created_at"] == day(3)
    assert event["person_properties"] == {"plan": "free", "source": "ad"}
    assert event["person_properties.$creator_event_uuid"] == event["uuid"]

    [snapshot] = hogflare.persons("canonical_distinct_id = 'alice'")
    assert snapshot["person_id"] == person_uuid("alice")
    assert snapshot["operation"] == "capture"
    assert snapshot["source"] == "hogflare"
    assert snapshot["api_key"] == TOKEN
    assert snapshot["distinct_ids"] == ["alice"]
    assert snapshot["created_at"] == day(3)
    assert snapshot["is_identified"] is False
    assert snapshot["properties"] == {"plan": "free"}
    assert snapshot["properties_set_once"] == {"source": "ad"}
    assert snapshot["merged_properties"] == {"plan": "free", "source": "ad"}
    assert snapshot["source_event_uuid"] == event["uuid"]
    assert snapshot["uuid"] != snapshot["person_id"]
    assert [row["person_int_id"] for row in hogflare.persons_latest()] == [1, 2]


async def test_every_person_touching_event_writes_a_snapshot_and_version_rises_only_on_change(
    hogflare: Hogflare,
) -> None:
    await send(
        hogflare,
        capture("carol", {"$set": {"plan": "free"}}),
        capture("carol", {"$set": {"plan": "free"}}),
        capture("carol", {"$set": {"plan": "pro"}}),
        capture("carol"),
    )
    rows = hogflare.persons("canonical_distinct_id = 'carol'")
    assert [row["operation"] for row in rows] == ["capture"] * 4
    versions = [row["version"] for row in rows]
    assert versions[0] == versions[1] < versions[2] == versions[3]
    assert [row["merged_properties"]["plan"] for row in rows] == ["free", "free", "pro", "pro"]
    assert sorted(row["source_event_uuid"] for row in rows) == sorted(r["uuid"] for r in hogflare.rows())


# --- $set_once, then $set, then $unset ------------------------------------------------------------

UPDATES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ("set_once fills absent keys only", {"plan": "free"}, {"$set_once": {"plan": "pro", "src": "ad"}},
     {"plan": "free", "src": "ad"}),
    ("set overwrites", {"plan": "free"}, {"$set": {"plan": "pro"}}, {"plan": "pro"}),
    ("set wins over set_once of the same key", {}, {"$set_once": {"plan": "free"}, "$set": {"plan": "pro"}},
     {"plan": "pro"}),
    # PostHog decides an event's `$unset` against the person before the event.
    ("unset removes a key the person had, which set overwrote", {"plan": "free"},
     {"$set": {"plan": "pro"}, "$unset": ["plan"]}, {}),
    ("unset removes a key the person had, which set_once kept", {"plan": "free"},
     {"$set_once": {"plan": "trial"}, "$unset": ["plan"]}, {}),
    ("set_once of a new key lands despite unset", {}, {"$set_once": {"plan": "free"}, "$unset": ["plan"]},
     {"plan": "free"}),
    ("set of a new key lands despite unset", {}, {"$set": {"plan": "pro"}, "$unset": ["plan"]}, {"plan": "pro"}),
    ("unset reads a string as its positions", {"0": "a", "ab": "b"}, {"$unset": "ab"}, {"ab": "b"}),
    ("unset takes an object's keys", {"a": 1, "b": 2}, {"$unset": {"a": None}}, {"b": 2}),
    ("unset of a missing key", {"a": 1}, {"$unset": ["zzz"]}, {"a": 1}),
    ("values keep their JSON types", {}, {"$set": {"n": 1.5, "list": [1, "x"], "obj": {"k": None}, "t": True}},
     {"n": 1.5, "list": [1, "x"], "obj": {"k": None}, "t": True}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "before", "update", "after"), UPDATES, ids=[case[0] for case in UPDATES])
async def test_update_order(
    hogflare: Hogflare, case: str, before: dict[str, Any], update: dict[str, Any], after: dict[str, Any]
) -> None:
    await send(hogflare, capture("dave", {"$set": {"seed": 1, **before}}))
    await send(hogflare, capture("dave", update))
    assert person_of(hogflare, "dave")["merged_properties"] == {"seed": 1, **after}
    # PostHog's row lays the event's `$set` over the person it wrote: a key the event both sets
    # and unsets is gone from the person, not from the row.
    shown = {"seed": 1, **after, **update.get("$set", {})}
    assert hogflare.rows(order="timestamp, created_at")[-1]["person_properties"] == shown


async def test_set_and_set_once_are_kept_apart(hogflare: Hogflare) -> None:
    await send(hogflare, capture("erin", {"$set": {"plan": "free"}, "$set_once": {"src": "ad", "ref": "x"}}))
    await send(hogflare, capture("erin", {"$set": {"ref": "y"}}))
    person = person_of(hogflare, "erin")
    assert person["properties"] == {"plan": "free", "ref": "y"}
    assert person["properties_set_once"] == {"src": "ad"}
    assert person["merged_properties"] == {"plan": "free", "src": "ad", "ref": "y"}


# --- Every route: top level and properties, top level winning ---------------------------------------

INNER: dict[str, Any] = {"$set": {"plan": "inner", "inner_only": 1}, "$set_once": {"once": "inner", "keep": 2}}
TOP: dict[str, Any] = {"$set": {"plan": "top"}, "$set_once": {"once": "top"}, "$unset": ["gone"]}
EXPECTED: dict[str, Any] = {"plan": "top", "inner_only": 1, "once": "top", "keep": 1}
#: A top-level `$unset` is `/engage`'s alone: PostHog's capture drops it, as Hogflare's capture routes do.
EXPECTED_WITHOUT_UNSET: dict[str, Any] = {**EXPECTED, "gone": True}


def route_body(path: str, distinct_id: str) -> Any:
    if path in {"/e", "/i/v0/e"}:
        return [{"event": "$pageview", "distinct_id": distinct_id, "token": TOKEN, "properties": INNER, **TOP}]
    if path == "/batch":
        return {"api_key": TOKEN, "batch": [capture(distinct_id, INNER, **TOP)]}
    if path in {"/identify", "/engage"}:
        return {"api_key": TOKEN, "distinct_id": distinct_id, "properties": INNER, **TOP}
    return {"api_key": TOKEN, **capture(distinct_id, INNER, **TOP)}


ROUTES = [
    ("/e", "capture"),
    ("/i/v0/e", "capture"),
    ("/capture", "capture"),
    ("/track", "capture"),
    ("/batch", "capture"),
    ("/identify", "identify"),
    ("/engage", "identify"),
]


@pytest.mark.parametrize(("path", "operation"), ROUTES)
async def test_every_route_updates_the_person(hogflare: Hogflare, path: str, operation: str) -> None:
    await send(hogflare, capture("frank", {"$set": {"plan": "free", "keep": 1, "gone": True}}, timestamp=at(1)))
    await post_ok(hogflare, path, route_body(path, "frank"))
    expected = EXPECTED if path == "/engage" else EXPECTED_WITHOUT_UNSET
    person = person_of(hogflare, "frank")
    assert person["person_id"] == person_uuid("frank")
    assert person["merged_properties"] == expected
    assert person["operation"] == operation
    last = hogflare.rows(order="timestamp")[-1]
    assert last["person_id"] == person_uuid("frank")
    assert last["person_properties"] == expected
    assert last["person_created_at"] == day(1)


async def test_identify_route_treats_plain_properties_as_set(hogflare: Hogflare) -> None:
    body = {"api_key": TOKEN, "distinct_id": "gina", "properties": {"email": "g@x.io", "plan": "pro"}}
    await post_ok(hogflare, "/identify", body)
    assert person_of(hogflare, "gina")["merged_properties"] == {"email": "g@x.io", "plan": "pro"}


async def test_engage_with_set_once_and_unset(hogflare: Hogflare) -> None:
    await send(hogflare, capture("hank", {"$set": {"plan": "free", "old": 1}}))
    body = {"$token": TOKEN, "$distinct_id": "hank", "$set_once": {"plan": "x", "src": "crm"}, "$unset": ["old"]}
    await post_ok(hogflare, "/engage", body)
    assert person_of(hogflare, "hank")["merged_properties"] == {"plan": "free", "src": "crm"}


# --- Initial and UTM properties -------------------------------------------------------------------

INITIAL: list[tuple[str, list[dict[str, Any]], dict[str, Any], list[str]]] = [
    (
        "browser, url, referrer, utm and click ids",
        [{"$browser": "Chrome", "$current_url": "https://a.io/x", "$referrer": "https://r.io", "utm_source": "news",
          "gclid": "g1", "$screen_width": 1280}],
        {"$browser": "Chrome", "$initial_browser": "Chrome", "$current_url": "https://a.io/x",
         "$initial_current_url": "https://a.io/x", "$referrer": "https://r.io", "$initial_referrer": "https://r.io",
         "utm_source": "news", "$initial_utm_source": "news", "gclid": "g1", "$initial_gclid": "g1",
         "$screen_width": 1280, "$initial_screen_width": 1280},
        [],
    ),
    (
        "an explicit $set and $set_once win",
        [{"utm_source": "news", "$set": {"utm_source": "mine"}, "$set_once": {"$initial_utm_source": "first"}}],
        {"utm_source": "mine", "$initial_utm_source": "first"},
        [],
    ),
    (
        "initial values stay, current values follow",
        [{"utm_medium": "email"}, {"utm_medium": "social"}],
        {"utm_medium": "social", "$initial_utm_medium": "email"},
        [],
    ),
    ("null is no initial value", [{"utm_campaign": None, "plan": 1}], {}, ["$initial_utm_campaign"]),
    (
        "$is_server skips the operating system",
        [{"$os": "Linux", "$os_version": "6.1", "$browser": "curl", "$is_server": True}],
        {"$browser": "curl", "$initial_browser": "curl"},
        ["$os", "$os_version", "$initial_os", "$initial_os_version"],
    ),
    (
        "a client event keeps the operating system",
        [{"$os": "Linux", "$os_version": "6.1"}],
        {"$os": "Linux", "$os_version": "6.1", "$initial_os": "Linux", "$initial_os_version": "6.1"},
        [],
    ),
    ("keys outside the list are not person properties", [{"plan": "pro", "$lib": "web"}], {}, ["plan", "$lib"]),
    (
        "$os_name stands for a missing $os",
        [{"$os_name": "iOS", "$app_version": "1.0"}],
        {"$os": "iOS", "$initial_os": "iOS", "$app_version": "1.0", "$initial_app_version": "1.0"},
        ["$os_name", "$initial_os_name"],
    ),
    (
        "$os wins over $os_name",
        [{"$os_name": "iOS", "$os": "iPadOS"}],
        {"$os": "iPadOS", "$initial_os": "iPadOS"},
        ["$os_name", "$initial_os_name"],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("case", "events", "present", "absent"), INITIAL, ids=[case[0] for case in INITIAL])
async def test_initial_and_utm_properties(
    hogflare: Hogflare, case: str, events: list[dict[str, Any]], present: dict[str, Any], absent: list[str]
) -> None:
    for properties in events:
        await send(hogflare, capture("ivan", properties, "$pageview"))
    merged = person_of(hogflare, "ivan")["merged_properties"]
    assert {key: merged.get(key) for key in present} == present
    assert [key for key in absent if key in merged] == []
    if "$os_name" in events[0]:
        # The event itself gets the `$os` PostHog reads `$os_name` as.
        assert hogflare.rows()[0]["properties"]["$os"] == present["$os"]


# --- Fast-changing keys ---------------------------------------------------------------------------

SEED = {"$current_url": "/a", "$set": {"plan": "free"}}
FILTERED_CASES: list[tuple[str, str, dict[str, Any], bool, str]] = [
    ("a filtered key alone", "$pageview", {"$current_url": "/b"}, False, "/a"),
    ("a filtered key in $set alone", "$pageview", {"$set": {"$current_url": "/b"}}, False, "/a"),
    ("with another change", "$pageview", {"$current_url": "/b", "$set": {"plan": "pro"}}, True, "/b"),
    ("a new filtered key", "$pageview", {"$set": {"$screen_width": 1024}}, True, "/a"),
    ("forced by $set", "$set", {"$current_url": "/b"}, True, "/b"),
    ("forced by $identify", "$identify", {"$current_url": "/b"}, True, "/b"),
]


@pytest.mark.parametrize(
    ("case", "name", "properties", "written", "url"), FILTERED_CASES, ids=[case[0] for case in FILTERED_CASES]
)
async def test_fast_changing_keys(
    hogflare: Hogflare, case: str, name: str, properties: dict[str, Any], written: bool, url: str
) -> None:
    await send(hogflare, capture("judy", SEED, "$pageview", timestamp=at(1)))
    await send(hogflare, capture("judy", properties, name, timestamp=at(2)))
    first, second = hogflare.persons("canonical_distinct_id = 'judy'")
    assert (second["version"] > first["version"]) is written
    assert second["version"] >= first["version"]
    assert second["merged_properties"]["$current_url"] == url
    assert person_of(hogflare, "judy")["merged_properties"]["$current_url"] == url
    # The event's row shows the person with the event's own `$set` on top, written or not, as
    # PostHog's rows do.
    row = hogflare.rows(order="timestamp")[-1]
    shown = "/b" if "/b" in str(properties) else url
    assert row["person_properties"]["$current_url"] == shown
    assert row["person_properties"]["plan"] == second["merged_properties"]["plan"]


# --- Identify: the four cases -----------------------------------------------------------------------

ANON = {"$set": {"shared": "anon", "anon_only": 1}}
USER = {"$set": {"shared": "user", "user_only": 1}}
IDENTIFY = {"$set": {"email": "u@x.io"}, "$set_once": {"shared": "identify", "first": "identify"}, "page": "login"}

FOUR_CASES: list[tuple[str, bool, bool, str, int, dict[str, Any]]] = [
    ("other exists", True, False, "anon", 1,
     {"shared": "anon", "anon_only": 1, "email": "u@x.io", "first": "identify"}),
    ("merge-into exists", False, True, "user", 2,
     {"shared": "user", "user_only": 1, "email": "u@x.io", "first": "identify"}),
    ("neither exists", False, False, "user", 3, {"shared": "identify", "email": "u@x.io", "first": "identify"}),
    ("both exist", True, True, "user", 1,
     {"shared": "user", "anon_only": 1, "user_only": 1, "email": "u@x.io", "first": "identify"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "anon_exists", "user_exists", "survivor", "created", "merged"),
    FOUR_CASES,
    ids=[case[0] for case in FOUR_CASES],
)
async def test_identify_four_cases(
    hogflare: Hogflare,
    case: str,
    anon_exists: bool,
    user_exists: bool,
    survivor: str,
    created: int,
    merged: dict[str, Any],
) -> None:
    if anon_exists:
        await send(hogflare, capture("anon", ANON, timestamp=at(1)))
    if user_exists:
        await send(hogflare, capture("user", USER, timestamp=at(2)))
    await send(hogflare, identify("user", "anon", IDENTIFY, timestamp=at(3)))
    await send(hogflare, capture("anon", {"$set": {"later": True}}, timestamp=at(4)))

    person = person_of(hogflare, "user")
    assert person == person_of(hogflare, "anon")
    assert sorted(person["distinct_ids"]) == ["anon", "user"]
    assert person["person_id"] == person_uuid(survivor)
    assert person["is_identified"] is True
    assert person["created_at"] == day(created)
    assert person["merged_properties"] == {**merged, "later": True}
    assert len(hogflare.persons_latest()) == 1

    [row] = event_rows(hogflare, "$identify")
    assert row["person_id"] == person_uuid(survivor)
    assert row["person_properties"] == merged
    assert row["properties"]["page"] == "login"
    assert row["properties"]["$anon_distinct_id"] == "anon"
    assert {row["person_id"] for row in hogflare.rows("timestamp >= '2024-01-03'")} == {person_uuid(survivor)}
    snapshots = hogflare.persons(f"source_event_uuid = {sql(row['uuid'])}")
    both = anon_exists and user_exists
    assert sorted(snapshot["operation"] for snapshot in snapshots) == (["identify", "merged"] if both else ["identify"])

    merged_rows = hogflare.persons("operation = 'merged'")
    if both:
        assert [(r["person_id"], r["canonical_distinct_id"]) for r in merged_rows] == [(person_uuid("anon"), "anon")]
    else:
        assert merged_rows == []


async def test_person_distinct_ids_gives_events_before_a_merge_their_person_now(hogflare: Hogflare) -> None:
    """The anonymous person's events keep its id once it is merged away; the view resolves them."""
    await send(hogflare, capture("anon", ANON, timestamp=at(1)), capture("user", USER, timestamp=at(2)))
    await send(hogflare, capture("loner", {}, timestamp=at(2)))
    await send(hogflare, identify("user", "anon", IDENTIFY, timestamp=at(3)))
    await send(hogflare, capture("anon", {"$set": {"later": True}}, timestamp=at(4)))

    assert {(row["distinct_id"], row["person_id"]) for row in hogflare.rows("event = 'test event'")} == {
        ("anon", person_uuid("anon")),  # before the merge
        ("anon", person_uuid("user")),
        ("user", person_uuid("user")),
        ("loner", person_uuid("loner")),
    }
    assert sorted(
        (row["api_key"], row["distinct_id"], row["person_id"]) for row in hogflare.read("person_distinct_ids")
    ) == [
        (TOKEN, "anon", person_uuid("user")),
        (TOKEN, "loner", person_uuid("loner")),
        (TOKEN, "user", person_uuid("user")),
    ]
    resolved = hogflare.read(
        "(select e.distinct_id, d.person_id from events e join person_distinct_ids d"
        " on d.api_key = e.api_key and d.distinct_id = e.distinct_id where e.event = 'test event')"
    )
    assert sorted((row["distinct_id"], row["person_id"]) for row in resolved) == [
        ("anon", person_uuid("user")),
        ("anon", person_uuid("user")),
        ("loner", person_uuid("loner")),
        ("user", person_uuid("user")),
    ]


async def test_identify_twice_is_a_no_op_for_identity(hogflare: Hogflare) -> None:
    await send(hogflare, identify("user", "anon"), identify("user", "anon", {"$set": {"again": 1}}))
    person = person_of(hogflare, "user")
    assert sorted(person["distinct_ids"]) == ["anon", "user"]
    assert person["merged_properties"] == {"again": 1}
    assert hogflare.persons("operation = 'merged'") == []


async def test_equal_ids_do_nothing(hogflare: Hogflare) -> None:
    await send(hogflare, identify("same", "same", {"$set": {"a": 1}}))
    person = person_of(hogflare, "same")
    assert person["distinct_ids"] == ["same"]
    assert person["is_identified"] is False
    assert person["merged_properties"] == {"a": 1}


async def test_ids_and_group_keys_of_many_bytes_are_persons_and_groups_like_any(hogflare: Hogflare) -> None:
    """PostHog's limits count characters: 200 emoji are 800 bytes, more than the store's keys
    hold, and must still make a person (and share a batch with other events) like any id."""
    emoji, other = "😀" * 200, "😀" * 199 + "😁"
    company = "ü" * 400
    await send(
        hogflare,
        capture("plain", {"$set": {"p": 1}}, name="beside"),
        capture(emoji, {"$set": {"a": 1}}, timestamp=at(1)),
        capture(other, {"$set": {"a": 2}}, timestamp=at(1)),
        capture(emoji, {"$group_type": "company", "$group_key": company, "$group_set": {"n": 1}}, "$groupidentify"),
    )
    await send(
        hogflare,
        identify("user", emoji, timestamp=at(2)),
        capture("user", {"$groups": {"company": company}}, name="grouped", timestamp=at(3)),
    )
    assert len(event_rows(hogflare, "beside")) == 1
    person = person_of(hogflare, "user")
    assert sorted(person["distinct_ids"]) == sorted([emoji, "user"])
    assert person["merged_properties"] == {"a": 1}
    assert person_of(hogflare, other)["merged_properties"] == {"a": 2}
    (grouped,) = event_rows(hogflare, "grouped")
    assert grouped["group0"] == company
    assert grouped["group_properties"] == {"company": {"n": 1}}


IDENTIFY_BODIES: list[tuple[str, str, dict[str, Any]]] = [
    ("/identify top-level anon id", "/identify",
     {"api_key": TOKEN, "distinct_id": "user", "$anon_distinct_id": "anon", "properties": {"$set": {"a": 1}}}),
    ("/identify anon id in properties", "/identify",
     {"api_key": TOKEN, "distinct_id": "user", "properties": {"$anon_distinct_id": "anon", "$set": {"a": 1}}}),
    ("/identify plain properties", "/identify",
     {"api_key": TOKEN, "distinct_id": "user", "properties": {"$anon_distinct_id": "anon", "a": 1}}),
    ("posthog-js on /e", "/e",
     {"event": "$identify", "distinct_id": "user", "$set": {"a": 1},
      "properties": {"$anon_distinct_id": "anon", "token": TOKEN, "distinct_id": "user"}}),
    ("/capture", "/capture",
     {"api_key": TOKEN, "event": "$identify", "distinct_id": "user",
      "properties": {"$anon_distinct_id": "anon", "$set": {"a": 1}}}),
    ("/batch type identify", "/batch",
     {"api_key": TOKEN, "batch": [{"type": "identify", "distinct_id": "user",
                                   "properties": {"$anon_distinct_id": "anon", "$set": {"a": 1}}}]}),
    ("/batch type identify, anon id at the top", "/batch",
     {"api_key": TOKEN, "batch": [{"type": "identify", "distinct_id": "user", "$anon_distinct_id": "anon",
                                   "properties": {"$set": {"a": 1}}}]}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "path", "body"), IDENTIFY_BODIES, ids=[case[0] for case in IDENTIFY_BODIES])
async def test_identify_shapes(hogflare: Hogflare, case: str, path: str, body: dict[str, Any]) -> None:
    await send(hogflare, capture("anon", {"$set": {"b": 2}}, timestamp=at(1)))
    await post_ok(hogflare, path, body)
    person = person_of(hogflare, "user")
    assert sorted(person["distinct_ids"]) == ["anon", "user"]
    assert person["person_id"] == person_uuid("anon")
    assert person["is_identified"] is True
    assert person["merged_properties"] == {"a": 1, "b": 2}
    assert person["operation"] == "identify"


# --- Alias ----------------------------------------------------------------------------------------

ALIAS_BODIES: list[tuple[str, str, Any]] = [
    ("/alias", "/alias", {"api_key": TOKEN, "distinct_id": "user", "alias": "anon"}),
    ("/batch type alias", "/batch", {"api_key": TOKEN, "batch": [{"type": "alias", "distinct_id": "user",
                                                                  "alias": "anon"}]}),
    ("/batch $create_alias", "/batch",
     {"api_key": TOKEN, "batch": [{"event": "$create_alias", "distinct_id": "user", "properties": {"alias": "anon"}}]}),
    ("posthog-python's $create_alias", "/batch",
     {"api_key": TOKEN, "batch": [{"event": "$create_alias", "properties": {"distinct_id": "user", "alias": "anon"}}]}),
    ("/capture $create_alias", "/capture",
     {"api_key": TOKEN, "event": "$create_alias", "distinct_id": "user", "properties": {"alias": "anon"}}),
    ("/e $create_alias", "/e",
     [{"event": "$create_alias", "properties": {"distinct_id": "user", "alias": "anon", "token": TOKEN}}]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "path", "body"), ALIAS_BODIES, ids=[case[0] for case in ALIAS_BODIES])
async def test_alias_shapes(hogflare: Hogflare, case: str, path: str, body: Any) -> None:
    await send(hogflare, capture("anon", {"$set": {"b": 2}}, timestamp=at(1)))
    await post_ok(hogflare, path, body)
    person = person_of(hogflare, "user")
    assert sorted(person["distinct_ids"]) == ["anon", "user"]
    assert person["person_id"] == person_uuid("anon")
    assert person["is_identified"] is True
    assert person["merged_properties"] == {"b": 2}
    assert person["operation"] == "alias"
    [row] = event_rows(hogflare, "$create_alias")
    assert (row["distinct_id"], row["person_id"]) == ("user", person_uuid("anon"))


async def test_alias_merges_two_anonymous_persons(hogflare: Hogflare) -> None:
    await send(
        hogflare,
        capture("old", {"$set": {"a": "old", "o": 1}}, timestamp=at(1)),
        capture("new", {"$set": {"a": "new", "n": 1}}, timestamp=at(2)),
    )
    await post_ok(hogflare, "/alias", {"api_key": TOKEN, "distinct_id": "new", "alias": "old"})
    person = person_of(hogflare, "old")
    assert person["person_id"] == person_uuid("new")
    assert person["merged_properties"] == {"a": "new", "o": 1, "n": 1}
    assert person["created_at"] == day(1)
    assert [row["person_id"] for row in hogflare.persons_latest()] == [person_uuid("new")]
    [gone] = hogflare.persons("operation = 'merged'")
    assert (gone["person_id"], gone["canonical_distinct_id"]) == (person_uuid("old"), "old")


# --- Merging identified persons -------------------------------------------------------------------

MERGES: list[tuple[str, dict[str, Any], bool, str]] = [
    ("$identify is refused", identify("u2", "u1", {"$set": {"after": 1}}), False, "identify"),
    ("$create_alias is refused", capture("u2", {"alias": "u1", "$set": {"after": 1}}, "$create_alias"), False, "alias"),
    ("$merge_dangerously merges", capture("u2", {"alias": "u1", "$set": {"after": 1}}, "$merge_dangerously"), True,
     "merge"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "item", "merges", "operation"), MERGES, ids=[case[0] for case in MERGES])
async def test_merging_an_identified_person(
    hogflare: Hogflare, case: str, item: dict[str, Any], merges: bool, operation: str
) -> None:
    await send(
        hogflare,
        capture("a1", {"$set": {"who": "one", "one": 1}}, timestamp=at(1)),
        identify("u1", "a1", timestamp=at(2)),
        capture("a2", {"$set": {"who": "two", "two": 2}}, timestamp=at(3)),
        identify("u2", "a2", timestamp=at(4)),
    )
    await send(hogflare, {**item, "timestamp": at(5)})
    [row] = hogflare.rows("timestamp = '2024-01-05'")
    assert row["person_id"] == person_uuid("a2")
    survivor = person_of(hogflare, "u2")
    assert survivor["person_id"] == person_uuid("a2")
    assert survivor["operation"] == operation
    if merges:
        assert sorted(survivor["distinct_ids"]) == ["a1", "a2", "u1", "u2"]
        assert survivor["merged_properties"] == {"who": "two", "one": 1, "two": 2, "after": 1}
        assert survivor["created_at"] == day(1)
        assert [r["person_id"] for r in hogflare.persons_latest()] == [person_uuid("a2")]
        assert [r["person_id"] for r in hogflare.persons("operation = 'merged'")] == [person_uuid("a1")]
    else:
        assert sorted(survivor["distinct_ids"]) == ["a2", "u2"]
        assert survivor["merged_properties"] == {"who": "two", "two": 2, "after": 1}
        other = person_of(hogflare, "u1")
        assert other["person_id"] == person_uuid("a1")
        assert other["merged_properties"] == {"who": "one", "one": 1}
        assert sorted(other["distinct_ids"]) == ["a1", "u1"]
        assert hogflare.persons("operation = 'merged'") == []


async def test_a_refused_merge_still_identifies_the_events_person(hogflare: Hogflare) -> None:
    """PostHog marks the event's person identified as soon as the two ids are legal and distinct
    (``mergeDistinctIds`` sets ``updateIsIdentified`` before it looks at either person), so a
    refused merge leaves the ids apart but the merge-into person identified."""
    await send(hogflare, identify("user-1", "anon-a"), capture("user-2", {"$set": {"x": 1}}))
    await send(hogflare, identify("user-2", "anon-a", {"$set": {"y": 2}}))
    person = person_of(hogflare, "user-2")
    assert person["distinct_ids"] == ["user-2"]
    assert person["merged_properties"] == {"x": 1, "y": 2}
    assert person["is_identified"] is True
    assert sorted(person_of(hogflare, "anon-a")["distinct_ids"]) == ["anon-a", "user-1"]


@pytest.mark.server
def test_refused_links_are_logged_as_warnings(tmp_path: Path) -> None:
    items = [
        identify("legit", "null"),
        identify("u1", "a1"),
        identify("u2", "a2"),
        identify("u2", "u1"),
    ]
    with Server(tmp_path / "data") as server:
        for item in items:
            response = httpx.post(f"{server.url}/batch/", json={"api_key": TOKEN, "batch": [item]})
            assert response.status_code == 200
        rows = wait_for_rows(server.data_dir, "select distinct_id from events", len(items))
        log = server.log()
    assert len(rows) == len(items)
    assert "cannot_merge_with_illegal_distinct_id" in log
    assert "cannot_merge_already_identified" in log


# --- Illegal distinct ids -------------------------------------------------------------------------

ILLEGAL = [
    "",
    "   ",
    "anonymous",
    "Guest",
    "DISTINCTID",
    "distinct_id",
    "ID",
    "not_authenticated",
    "email",
    "undefined",
    "True",
    "false",
    "[object Object]",
    "NaN",
    "None",
    "none",
    "null",
    "0",
    "'undefined'",
    '"null"',
    "'Anonymous'",
    '"GUEST"',
]
#: Space around an illegal id makes a legal one: PostHog trims only to find ids of nothing but space.
LEGAL_LOOKALIKES = ["nan", "NULL", "NONE", "00", "user-0", "[object object]", " anonymous ", " null", "' guest'"]


@pytest.mark.parametrize("illegal", ILLEGAL)
async def test_illegal_anon_id_is_not_merged(hogflare: Hogflare, illegal: str) -> None:
    items = [capture("legit", {"$set": {"a": 1}})]
    if illegal.strip():
        items.append(capture(illegal, {"$set": {"other": 1}}))
    await send(hogflare, *items)
    await send(hogflare, identify("legit", illegal, {"$set": {"b": 2}}))
    person = person_of(hogflare, "legit")
    assert person["distinct_ids"] == ["legit"]
    assert person["is_identified"] is False
    assert person["merged_properties"] == {"a": 1, "b": 2}
    [row] = event_rows(hogflare, "$identify")
    assert row["person_id"] == person_uuid("legit")
    if illegal.strip():
        assert person_of(hogflare, illegal)["distinct_ids"] == [illegal]


@pytest.mark.parametrize("illegal", [text for text in ILLEGAL if text.strip()])
async def test_illegal_distinct_id_is_not_merged_into(hogflare: Hogflare, illegal: str) -> None:
    await send(hogflare, capture("legit-anon", {"$set": {"a": 1}}))
    await send(hogflare, capture(illegal, {"alias": "legit-anon", "$set": {"b": 2}}, "$create_alias"))
    assert person_of(hogflare, "legit-anon")["distinct_ids"] == ["legit-anon"]
    person = person_of(hogflare, illegal)
    assert person["distinct_ids"] == [illegal]
    assert person["merged_properties"] == {"b": 2}
    [row] = event_rows(hogflare, "$create_alias")
    assert row["person_id"] == person_uuid(illegal)


async def test_an_anon_id_of_another_type_is_read_as_posthog_reads_it(hogflare: Hogflare) -> None:
    """PostHog's ingestion takes `String()` of it: an object is `[object Object]` (illegal), a list
    its items joined by commas."""
    await send(hogflare, capture("1,2"), capture("user-a"), capture("user-b"))
    await send(
        hogflare,
        capture("user-a", {"$anon_distinct_id": {"id": 1}}, "$identify"),
        capture("user-b", {"$anon_distinct_id": [1, 2]}, "$identify"),
    )
    assert person_of(hogflare, "user-a")["distinct_ids"] == ["user-a"]
    assert sorted(person_of(hogflare, "user-b")["distinct_ids"]) == ["1,2", "user-b"]


@pytest.mark.parametrize("lookalike", LEGAL_LOOKALIKES)
async def test_legal_lookalikes_merge(hogflare: Hogflare, lookalike: str) -> None:
    await send(hogflare, capture(lookalike), identify("someone", lookalike))
    assert sorted(person_of(hogflare, "someone")["distinct_ids"]) == sorted(["someone", lookalike])


# --- Personless events ----------------------------------------------------------------------------

PERSONLESS = {
    "$process_person_profile": False,
    "$set": {"ignored": 1},
    "$set_once": {"ignored_once": 1},
    "$unset": ["ignored_too"],
}


@pytest.mark.parametrize("team_id", [None, 42])
async def test_personless_event(tmp_path: Path, team_id: int | None) -> None:
    env = {} if team_id is None else {"POSTHOG_TEAM_ID": str(team_id)}
    async with started(tmp_path / "data", env) as hogflare:
        await send(hogflare, capture("ghost", PERSONLESS, "$pageview", **{"$set": {"top": 1}}))
        [row] = hogflare.rows()
        assert row["person_id"] == person_uuid("ghost", TOKEN if team_id is None else team_id)
        assert row["person_created_at"] == PERSONLESS_CREATED_AT
        assert row["person_properties"] == {}
        assert row["properties"]["$process_person_profile"] is False
        # The updates it did not make are not kept with it, as on PostHog.
        assert not {"$set", "$set_once", "$unset"} & row["properties"].keys()
        assert hogflare.persons() == []
        assert hogflare.persons_latest() == []
        # A person created later gets the id personless events already carry.
        await send(hogflare, capture("ghost", {"$set": {"real": 1}}))
        person = person_of(hogflare, "ghost")
        assert person["person_id"] == row["person_id"]
        assert person["merged_properties"] == {"real": 1}
        assert person["team_id"] == team_id


async def test_identify_after_personless_events_keeps_their_person_id(hogflare: Hogflare) -> None:
    """posthog-js's default (`person_profiles: 'identified_only'`): an anonymous visitor's events
    are personless until `identify`; the person then created takes the uuid they already carry."""
    await send(hogflare, capture("anon-p", {"$process_person_profile": False}, "$pageview", timestamp=at(1)))
    await send(hogflare, identify("user-p", "anon-p", {"$set": {"email": "p@example.com"}}, timestamp=at(2)))
    await send(hogflare, capture("user-p", {"$set": {"plan": "pro"}}, "bought", timestamp=at(3)))
    person = person_of(hogflare, "user-p")
    assert sorted(person["distinct_ids"]) == ["anon-p", "user-p"]
    assert person["person_id"] == person_uuid("anon-p")
    assert {row["event"]: row["person_id"] for row in hogflare.rows()} == dict.fromkeys(
        ["$pageview", "$identify", "bought"], person_uuid("anon-p")
    )
    # Without personless events before, the identified id names the person, as before.
    await send(hogflare, identify("user-q", "anon-q"))
    assert person_of(hogflare, "anon-q")["person_id"] == person_uuid("user-q")


async def test_a_merged_person_is_newer_than_either(hogflare: Hogflare) -> None:
    await send(hogflare, *(capture("mv-anon", {"$set": {"n": n}}, timestamp=at(1 + n)) for n in range(4)))
    await send(hogflare, capture("mv-user", {"$set": {"a": 1}}, timestamp=at(6)))
    await send(hogflare, identify("mv-user", "mv-anon", timestamp=at(7)))
    assert person_of(hogflare, "mv-user")["version"] == 4


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # Properties an envelope shares with its items.
        ("/e/", {"api_key": TOKEN, "data": [{"event": "e", "distinct_id": "env-user"}], "properties": PERSONLESS}),
        # A key sent twice: the first is the one read, here as everywhere else.
        ("/capture/", '{"api_key":"' + TOKEN + '","event":"e","distinct_id":"env-user","properties":'
         '{"$process_person_profile":false,"$process_person_profile":true,"$set":{"x":1}}}'),
    ],
)  # fmt: skip
async def test_a_personless_event_keeps_no_updates_however_it_says_so(hogflare: Hogflare, path: str, body: Any) -> None:
    await post_ok(hogflare, path, body)
    [row] = hogflare.rows()
    assert row["person_properties"] == {}
    assert not {"$set", "$set_once", "$unset"} & row["properties"].keys()
    assert hogflare.persons() == []


async def test_personless_event_of_a_known_person(hogflare: Hogflare) -> None:
    await send(hogflare, capture("known", {"$set": {"a": 1}}, timestamp=at(1)))
    await send(hogflare, capture("known", PERSONLESS, "$pageview", timestamp=at(2)))
    row = hogflare.rows(order="timestamp")[-1]
    assert row["person_id"] == person_uuid("known")
    assert row["person_created_at"] == day(1)
    assert row["person_properties"] == {}
    assert len(hogflare.persons()) == 1
    assert person_of(hogflare, "known")["merged_properties"] == {"a": 1}


async def test_a_heatmap_event_makes_and_changes_no_person(hogflare: Hogflare) -> None:
    """posthog-js's `$$heatmap` events: PostHog reads them in a pipeline of their own that never
    touches persons; here the row goes with the person its distinct id has, if any."""
    heatmap = {"$heatmap_data": {"/page": [{"x": 1, "y": 2, "type": "click"}]}, "$set": {"plan": "free"}}
    await send(hogflare, capture("hm-visitor", heatmap, "$$heatmap", timestamp=at(1)))
    await send(hogflare, capture("hm-user", {"$set": {"plan": "pro"}}, timestamp=at(2)))
    await send(hogflare, capture("hm-user", heatmap, "$$heatmap", timestamp=at(3)))
    visitor, user = hogflare.rows("event = '$$heatmap'", order="timestamp")
    assert (visitor["person_id"], visitor["person_properties"]) == (person_uuid("hm-visitor"), {})
    assert visitor["person_created_at"] == PERSONLESS_CREATED_AT
    assert (user["person_id"], user["person_properties"]) == (person_uuid("hm-user"), {"plan": "pro"})
    assert user["properties"]["$heatmap_data"] == heatmap["$heatmap_data"]
    # The known person's row has its snapshot beside it, as every row that goes with a person.
    assert [(row["canonical_distinct_id"], row["version"]) for row in hogflare.persons()] == [("hm-user", 0)] * 2
    assert person_of(hogflare, "hm-user")["merged_properties"] == {"plan": "pro"}
    # Sent personless, it is personless like any other event.
    await send(hogflare, capture("hm-user", {**heatmap, **PERSONLESS}, "$$heatmap", timestamp=at(4)))
    assert hogflare.rows("event = '$$heatmap'", order="timestamp")[-1]["person_properties"] == {}


async def test_identity_and_group_events_with_person_processing_off_are_discarded(hogflare: Hogflare) -> None:
    """PostHog's ingestion drops them (`invalid_event_when_process_person_profile_is_false`): they
    would change a person or a group the event says to leave alone. The request still succeeds."""
    await send(hogflare, capture("pl-user", {"$set": {"a": 1}}), capture("pl-anon", {"$set": {"b": 2}}))
    group = {"$group_type": "company", "$group_key": "acme", "$group_set": {"name": "Acme"}}
    refused = [
        identify("pl-user", "pl-anon", PERSONLESS),
        capture("pl-user", {"alias": "pl-anon", **PERSONLESS}, "$create_alias"),
        capture("pl-user", {"alias": "pl-anon", **PERSONLESS}, "$merge_dangerously"),
        capture("pl-user", {**group, **PERSONLESS}, "$groupidentify"),
    ]
    await send(hogflare, *refused, capture("pl-user", PERSONLESS, "kept"))
    await post_ok(hogflare, "/capture/", {"api_key": TOKEN, **refused[0]})
    assert sorted(row["event"] for row in hogflare.rows()) == ["kept", "test event", "test event"]
    assert person_of(hogflare, "pl-user")["distinct_ids"] == ["pl-user"]
    assert person_of(hogflare, "pl-anon")["distinct_ids"] == ["pl-anon"]
    assert hogflare.groups() == []


async def test_team_id_names_the_person(tmp_path: Path) -> None:
    async with started(tmp_path / "data", {"POSTHOG_TEAM_ID": "42"}) as hogflare:
        await send(hogflare, capture("teamed", {"$set": {"a": 1}}))
        [row] = hogflare.rows()
        assert row["person_id"] == person_uuid("teamed", 42)
        person = person_of(hogflare, "teamed")
        assert (person["person_id"], person["team_id"]) == (person_uuid("teamed", 42), 42)


async def test_two_projects_under_one_team_id_keep_their_persons_apart(tmp_path: Path) -> None:
    """With `POSTHOG_TEAM_ID` set, one distinct id sent with two tokens is two persons that share
    a uuid: the views keep each project's."""
    async with started(tmp_path / "data", {"POSTHOG_TEAM_ID": "42"}) as hogflare:
        for token, plan in [(TOKEN, "pro"), ("phc_other", "free")]:
            body = {"api_key": token, "batch": [capture("shared", {"$set": {"plan": plan}})]}
            assert (await hogflare.post("/batch/", body)).status_code == 200
        persons = hogflare.persons_latest(order="api_key")
        assert [(row["api_key"], row["merged_properties"]["plan"]) for row in persons] == [
            ("phc_other", "free"),
            (TOKEN, "pro"),
        ]
        ids = hogflare.read("person_distinct_ids", order="api_key")
        assert [(row["api_key"], row["distinct_id"]) for row in ids] == [("phc_other", "shared"), (TOKEN, "shared")]


# --- Restart --------------------------------------------------------------------------------------


async def test_persons_survive_a_restart(tmp_path: Path) -> None:
    async with started(tmp_path / "data") as first:
        await send(
            first,
            capture("anon", {"$set": {"a": 1}}, timestamp=at(1)),
            identify("user", "anon", {"$set": {"email": "u@x.io"}}, timestamp=at(2)),
            capture("other", timestamp=at(2)),
        )
        before = person_of(first, "user")
    del first
    gc.collect()  # the first app's store is closed before the next one opens it, as across processes
    async with started(tmp_path / "data") as hogflare:
        await send(
            hogflare,
            capture("anon", {"$set": {"b": 2}}, timestamp=at(3)),
            capture("late", timestamp=at(3)),
        )
        after = person_of(hogflare, "user")
        assert after["person_id"] == before["person_id"] == person_uuid("anon")
        assert after["person_int_id"] == before["person_int_id"]
        assert after["version"] > before["version"]
        assert after["is_identified"] is True
        assert sorted(after["distinct_ids"]) == ["anon", "user"]
        assert after["merged_properties"] == {"a": 1, "email": "u@x.io", "b": 2}
        assert after["created_at"] == day(1)
        assert person_of(hogflare, "late")["person_int_id"] == 3
        row = hogflare.rows("timestamp = '2024-01-03' and distinct_id = 'anon'")[0]
        assert row["person_properties"] == {"a": 1, "email": "u@x.io", "b": 2}


# --- /__debug/person ------------------------------------------------------------------------------


async def test_debug_person_is_off_without_a_token(hogflare: Hogflare) -> None:
    await send(hogflare, capture("dbg"))
    response = await hogflare.client.get("/__debug/person/dbg", headers={"x-hogflare-debug-token": "anything"})
    assert response.status_code == 404


DEBUG_TOKEN = "debug-s3cret"


@pytest.mark.parametrize("header", [None, "wrong", DEBUG_TOKEN + "x"])
async def test_debug_person_refuses_a_wrong_token(tmp_path: Path, header: str | None) -> None:
    async with started(tmp_path / "data", {"PERSON_DEBUG_TOKEN": DEBUG_TOKEN}) as hogflare:
        headers = {} if header is None else {"x-hogflare-debug-token": header}
        response = await hogflare.client.get("/__debug/person/dbg", headers=headers)
        assert response.status_code == 401


async def test_debug_person_shape(tmp_path: Path) -> None:
    async with started(tmp_path / "data", {"PERSON_DEBUG_TOKEN": DEBUG_TOKEN}) as hogflare:
        await send(
            hogflare,
            capture("anon", {"$set": {"plan": "pro"}, "$set_once": {"src": "ad"}}, timestamp=at(1)),
            identify("user", "anon", timestamp=at(2)),
        )
        headers = {"x-hogflare-debug-token": f" {DEBUG_TOKEN} "}
        response = await hogflare.client.get("/__debug/person/user", params={"token": TOKEN}, headers=headers)
        assert response.status_code == 200
        body = response.json()
        person = person_of(hogflare, "user")
        record = body["record"]
        assert body["canonical_id"] == "user"
        assert set(record) >= {
            "id",
            "team_id",
            "uuid",
            "created_at",
            "version",
            "distinct_ids",
            "properties",
            "properties_set_once",
        }
        assert record["id"] == person["person_int_id"]
        assert record["team_id"] is None
        assert record["uuid"] == person["person_id"] == person_uuid("anon")
        assert dt.datetime.fromisoformat(record["created_at"]) == day(1)
        assert record["version"] == person["version"]
        assert sorted(record["distinct_ids"]) == ["anon", "user"]
        creator = hogflare.rows("distinct_id = 'anon'")[0]["uuid"]
        assert record["properties"] == {"plan": "pro", "$creator_event_uuid": creator}
        assert record["properties_set_once"] == {"src": "ad"}

        missing = await hogflare.client.get("/__debug/person/nobody", params={"token": TOKEN}, headers=headers)
        assert (missing.status_code, missing.json()) == (200, {"canonical_id": "nobody", "record": None})
