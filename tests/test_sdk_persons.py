"""Persons and groups as the real SDKs make them: posthog-js in Chromium, posthog-node and
posthog-python identify, alias, set person properties, identify groups and send personless events
to a real server, and the persons, groups and event rows are read back with ``hogflare query``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import posthog
import pytest

from hogflare.config import Settings
from hogflare.lake import Lake
from hogflare.query import run, to_json
from tests.helpers.sdk import run_script
from tests.helpers.server import Server

pytestmark = [pytest.mark.server, pytest.mark.sdk]

JS = Path(__file__).parent / "js"
PERSON_NAMESPACE = uuid.UUID("932979b4-65c3-4424-8467-0b66ec27bc22")
PERSONLESS_CREATED_AT = "1970-01-01T00:00:05"
JSON_COLUMNS = ("properties", "person_properties", "group_properties", "merged_properties", "properties_set_once")

Row = dict[str, Any]
Rows = list[Row]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("sdk-persons") / "data") as running:
        yield running


def person_uuid(token: str, distinct_id: str) -> str:
    """PostHog's deterministic person id: UUIDv5 of "{team}:{distinct_id}" (team = the token here)."""
    return str(uuid.uuid5(PERSON_NAMESPACE, f"{token}:{distinct_id}"))


def read(server: Server, sql: str) -> Rows:
    """What ``hogflare query --format json`` prints, read in-process (the command takes seconds to start)."""
    lake = Lake(Settings.from_env({}, data_dir=server.data_dir).lake_dir)
    rows: Rows = json.loads(to_json(run(lake, sql)))
    for row in rows:
        for column in JSON_COLUMNS:
            if isinstance(row.get(column), str):
                row[column] = json.loads(row[column])
    return rows


def eventually(server: Server, sql: str, ready: Callable[[Rows], bool], timeout: float = 30.0) -> Rows:
    """Poll the lake until the rows of ``sql`` satisfy ``ready``; the last rows either way."""
    deadline = time.monotonic() + timeout
    rows = read(server, sql)
    while not ready(rows) and time.monotonic() < deadline:
        time.sleep(0.3)
        rows = read(server, sql)
    return rows


def events_of(server: Server, token: str, names: set[str]) -> Rows:
    """Every event row of one project, once all of ``names`` have landed."""
    sql = f"select * from events where api_key = '{token}' order by timestamp, uuid"
    rows = eventually(server, sql, lambda rows: names <= {row["event"] for row in rows})
    assert names <= {row["event"] for row in rows}, sorted({row["event"] for row in rows})
    return rows


def latest_person(server: Server, token: str, distinct_id: str, ready: Callable[[Row], bool]) -> Row:
    """The live person holding ``distinct_id``, once its newest snapshot satisfies ``ready``."""
    sql = f"select * from persons_latest where api_key = '{token}' and list_contains(distinct_ids, '{distinct_id}')"
    rows = eventually(server, sql, lambda rows: len(rows) == 1 and ready(rows[0]))
    assert len(rows) == 1, rows
    return rows[0]


def groups_of(server: Server, token: str) -> Rows:
    return eventually(server, f"select * from groups where api_key = '{token}'", lambda rows: len(rows) > 0)


def one(rows: Rows, event: str) -> Row:
    found = [row for row in rows if row["event"] == event]
    assert len(found) == 1, (event, [row["event"] for row in rows])
    return found[0]


def node(script: str, server: Server, token: str, scenario: str, run_id: str) -> dict[str, Any]:
    return run_script(script, server.url, token, scenario, run_id)


def has(props: dict[str, Any], **expected: Any) -> bool:
    return all(props.get(key) == value for key, value in expected.items())


@pytest.mark.browser
def test_posthog_js_identify_alias_group_register_reset(server: Server) -> None:
    token = "phc_js_persons"
    run_id = uuid.uuid4().hex
    page = node("browser.mjs", server, token, "persons", run_id)
    assert page["page_errors"] == []
    anon, user, alias, new_anon = page["anon_id"], page["user_id"], page["alias_id"], page["new_anon_id"]
    steps = {"anonymous browsing", "$identify", "after identify", "after navigation", "$create_alias", "$set"}
    steps.add("$groupidentify")
    rows = events_of(server, token, steps | {"with group", "registered", "after reset"})

    # The anonymous visitor's person becomes the identified person: one person_id before and after.
    person = person_uuid(token, anon)
    browsing = [row for row in rows if row["distinct_id"] == anon]
    identified = [row for row in rows if row["distinct_id"] == user and row["event"] != "$groupidentify"]
    assert {"$pageview", "custom event", "anonymous browsing"} <= {row["event"] for row in browsing}
    as_user = {"$identify", "after identify", "after navigation", "$create_alias", "$set", "with group", "registered"}
    assert as_user <= {row["event"] for row in identified}
    assert {row["person_id"] for row in browsing + identified} == {person}

    # reset(): a new anonymous id, and a person of its own.
    after_reset = one(rows, "after reset")
    assert after_reset["distinct_id"] == new_anon != anon
    assert after_reset["person_id"] == person_uuid(token, new_anon) != person

    # $identify keeps the event's own properties; its top-level $set/$set_once shape the person.
    identify = one(rows, "$identify")
    assert identify["properties"]["$anon_distinct_id"] == anon
    assert identify["properties"]["$current_url"].startswith("http://127.0.0.1:")
    assert has(identify["person_properties"], name="Ada", plan="pro", first_seen="2024-01-01")
    assert has(one(rows, "after identify")["person_properties"], name="Ada", plan="pro")

    # A new page alone: the row shows the page it was on, as PostHog's rows do, while the person
    # (its snapshot beside that row) keeps the page of its last real change.
    before, navigated = one(rows, "after identify"), one(rows, "after navigation")
    page = navigated["properties"]["$current_url"]
    assert page.endswith("/pricing?plan=team")
    assert page != before["properties"]["$current_url"]
    assert navigated["person_properties"]["$current_url"] == page
    assert navigated["person_properties"]["$pathname"] == "/pricing"
    uuids = f"'{before['uuid']}', '{navigated['uuid']}'"
    sql = f"select * from persons where api_key = '{token}' and source_event_uuid in ({uuids})"
    snapshots = {row["source_event_uuid"]: row for row in eventually(server, sql, lambda rows: len(rows) == 2)}
    unchanged, kept = snapshots[before["uuid"]], snapshots[navigated["uuid"]]
    assert kept["merged_properties"]["$current_url"] == before["properties"]["$current_url"] != page
    assert kept["version"] == unchanged["version"]

    latest = latest_person(server, token, user, lambda row: has(row["merged_properties"], favourite="tea"))
    assert latest["person_id"] == person
    assert sorted(latest["distinct_ids"]) == sorted([anon, user, alias])
    assert latest["is_identified"] is True
    assert has(latest["merged_properties"], name="Ada", plan="team", favourite="tea", first_seen="2024-01-01")
    assert has(latest["merged_properties"], signup="web")
    assert has(latest["properties_set_once"], first_seen="2024-01-01", signup="web")

    stranger = latest_person(server, token, new_anon, lambda row: True)
    assert stranger["person_id"] != person
    assert stranger["distinct_ids"] == [new_anon]
    assert stranger["is_identified"] is False

    # group(): the group row, then events carrying $groups get the slot, the column and its properties.
    [group] = groups_of(server, token)
    assert (group["group_type"], group["group_type_index"], group["group_key"]) == ("company", 0, "acme")
    assert group["group_properties"] == {"name": "Acme"}
    # As on PostHog, group() goes with the user's person, which it leaves as it was.
    group_identify = one(rows, "$groupidentify")
    assert group_identify["person_id"] == person
    assert group_identify["group0"] == "acme"
    for name in ("with group", "registered"):
        row = one(rows, name)
        assert row["group0"] == "acme", name
        assert row["properties"]["$group_0"] == "acme", name
        assert row["group_properties"] == {"company": {"name": "Acme"}}, name

    # register(): super properties ride on later events, and reset() clears them with the groups.
    assert one(rows, "registered")["properties"]["tier"] == "gold"
    assert "tier" not in one(rows, "with group")["properties"]
    assert "tier" not in after_reset["properties"]
    assert after_reset["properties"]["run_id"] == run_id
    assert after_reset["group0"] is None


@pytest.mark.browser
def test_posthog_js_identified_only_is_personless_until_identify(server: Server) -> None:
    token = "phc_js_identified_only"
    page = node("browser.mjs", server, token, "identified_only", uuid.uuid4().hex)
    assert page["page_errors"] == []
    anon, user = page["anon_id"], page["user_id"]
    rows = events_of(server, token, {"$pageview", "anonymous browsing", "$identify", "after identify"})

    anonymous = [row for row in rows if row["distinct_id"] == anon]
    assert {"$pageview", "anonymous browsing"} <= {row["event"] for row in anonymous}
    for row in anonymous:
        assert row["properties"]["$process_person_profile"] is False, row["event"]
        assert row["person_id"] == person_uuid(token, anon), row["event"]
        assert row["person_properties"] == {}, row["event"]
        assert row["person_created_at"].startswith(PERSONLESS_CREATED_AT), row["event"]

    latest = latest_person(server, token, user, lambda row: has(row["merged_properties"], name="Bob"))
    assert sorted(latest["distinct_ids"]) == sorted([anon, user])
    assert latest["is_identified"] is True
    # The person takes the uuid the anonymous events already carry: the visitor's browsing before
    # signing in goes with them, as on PostHog.
    assert latest["person_id"] == person_uuid(token, anon)
    assert {one(rows, "$identify")["person_id"], one(rows, "after identify")["person_id"]} == {latest["person_id"]}
    # posthog-js marks every event; PostHog's rows keep the mark only where it is false.
    for name in ("$identify", "after identify"):
        assert "$process_person_profile" not in one(rows, name)["properties"], name
    snapshots = read(server, f"select source_event_uuid from persons where api_key = '{token}'")
    assert not {row["source_event_uuid"] for row in snapshots} & {row["uuid"] for row in anonymous}


def test_posthog_node_identify_alias_groups_personless(server: Server) -> None:
    token = "phc_node_persons"
    sent = node("node_sdk.mjs", server, token, "persons", uuid.uuid4().hex)
    assert sent["errors"] == []
    anon, user, alias, ghost = sent["anon_id"], sent["user_id"], sent["alias_id"], sent["ghost_id"]
    person_events = ["node anonymous", "$identify", "$create_alias", "node via alias", "node with group"]
    personless = ["node personless", "node personless known"]
    rows = events_of(server, token, {*person_events, *personless, "$groupidentify"})

    person = person_uuid(token, anon)
    assert [one(rows, name)["person_id"] for name in person_events] == [person] * len(person_events)
    assert has(one(rows, "node anonymous")["person_properties"], plan="free", first_seen="2024-01-01")
    assert has(one(rows, "$identify")["person_properties"], name="Grace", plan="pro", first_seen="2024-01-01")

    latest = latest_person(server, token, user, lambda row: alias in row["distinct_ids"])
    assert latest["person_id"] == person
    assert sorted(latest["distinct_ids"]) == sorted([anon, user, alias])
    assert latest["is_identified"] is True
    assert has(latest["merged_properties"], name="Grace", plan="pro", first_seen="2024-01-01", signup="node")

    # One snapshot per person-touching event, named after the kind of event.
    snapshots = eventually(
        server,
        f"select * from persons where api_key = '{token}' and operation != 'merged'",
        lambda snaps: len(snaps) >= len(person_events),
    )
    operations = {row["source_event_uuid"]: row["operation"] for row in snapshots}
    expected = {"node anonymous": "capture", "$identify": "identify", "$create_alias": "alias"}
    expected |= {"node via alias": "capture", "node with group": "capture"}
    assert {name: operations.get(one(rows, name)["uuid"]) for name in person_events} == expected
    assert len([row for row in snapshots if row["person_id"] == person]) == len(person_events)

    [group] = groups_of(server, token)
    assert (group["group_type"], group["group_type_index"], group["group_key"]) == ("company", 0, "acme")
    assert group["group_properties"] == {"name": "Acme", "employees": 11}
    # groupIdentify() without a distinct id sends posthog-node's "$company_acme", which, as on
    # PostHog, is given a person of its own.
    group_identify = one(rows, "$groupidentify")
    assert group_identify["distinct_id"] == "$company_acme"
    assert group_identify["person_id"] == person_uuid(token, "$company_acme")
    grouped = one(rows, "node with group")
    assert (grouped["group0"], grouped["properties"]["$group_0"]) == ("acme", "acme")
    assert grouped["group_properties"] == {"company": {"name": "Acme", "employees": 11}}

    # Personless: the deterministic id and no person for a new id; the person's id, bare, for a known one.
    stranger = one(rows, "node personless")
    assert stranger["person_id"] == person_uuid(token, ghost)
    assert stranger["person_properties"] == {}
    assert stranger["person_created_at"].startswith(PERSONLESS_CREATED_AT)
    known = one(rows, "node personless known")
    assert known["person_id"] == person
    assert known["person_properties"] == {}
    assert known["person_created_at"] == one(rows, "node anonymous")["person_created_at"]
    ghosts = read(server, f"select * from persons where list_contains(distinct_ids, '{ghost}')")
    assert ghosts == []


def test_posthog_python_set_alias_group_personless(server: Server) -> None:
    token = "phc_python_persons"
    run_id = uuid.uuid4().hex
    anon, user, alias, ghost = (f"py-{kind}-{run_id}" for kind in ("anon", "user", "alias", "ghost"))
    client = posthog.Posthog(token, host=server.url, sync_mode=True)
    try:
        client.capture(
            "py anonymous",
            distinct_id=anon,
            properties={"$set": {"plan": "free"}, "$set_once": {"first_seen": "2024-01-01"}},
        )
        client.set(distinct_id=anon, properties={"name": "Linus"})
        client.set_once(distinct_id=anon, properties={"first_seen": "2099-01-01", "source": "python"})
        client.capture("$identify", distinct_id=user, properties={"$anon_distinct_id": anon, "$set": {"plan": "pro"}})
        client.alias(previous_id=user, distinct_id=alias)
        client.group_identify("company", "acme", {"name": "Acme"})
        client.capture("py with group", distinct_id=alias, groups={"company": "acme"})
        client.capture("py personless", distinct_id=ghost, properties={"$process_person_profile": False})
        unnamed = client.capture("py without distinct id")
    finally:
        client.shutdown()
    names = {"py anonymous", "$set", "$set_once", "$identify", "$create_alias", "$groupidentify", "py with group"}
    rows = events_of(server, token, names | {"py personless", "py without distinct id"})

    person = person_uuid(token, anon)
    for name in names - {"$groupidentify"}:
        assert one(rows, name)["person_id"] == person, name
    # posthog-python's group_identify, given no distinct id, makes one up, which is given a person
    # of its own, as on PostHog.
    group_identify = one(rows, "$groupidentify")
    assert group_identify["distinct_id"] not in {anon, user, alias}
    assert group_identify["person_id"] == person_uuid(token, group_identify["distinct_id"])
    assert has(one(rows, "$set")["person_properties"], name="Linus", plan="free", first_seen="2024-01-01")
    assert has(one(rows, "$set_once")["person_properties"], first_seen="2024-01-01", source="python")

    latest = latest_person(server, token, user, lambda row: alias in row["distinct_ids"])
    assert latest["person_id"] == person
    assert sorted(latest["distinct_ids"]) == sorted([anon, user, alias])
    assert latest["is_identified"] is True
    merged = latest["merged_properties"]
    assert has(merged, name="Linus", plan="pro", first_seen="2024-01-01", source="python")
    # posthog-python marks its events $is_server, so its $os is not made a person property.
    assert "$os" in one(rows, "py anonymous")["properties"]
    assert "$os" not in merged
    assert "$initial_os" not in merged

    [group] = groups_of(server, token)
    assert (group["group_type"], group["group_type_index"], group["group_key"]) == ("company", 0, "acme")
    assert group["group_properties"] == {"name": "Acme"}
    grouped = one(rows, "py with group")
    assert (grouped["group0"], grouped["properties"]["$group_0"]) == ("acme", "acme")
    assert grouped["group_properties"] == {"company": {"name": "Acme"}}

    for name in ("py personless", "py without distinct id"):
        row = one(rows, name)
        assert row["properties"]["$process_person_profile"] is False, name
        assert row["person_id"] == person_uuid(token, row["distinct_id"]), name
        assert row["person_properties"] == {}, name
        assert row["person_created_at"].startswith(PERSONLESS_CREATED_AT), name
    assert one(rows, "py without distinct id")["uuid"] == unnamed
    strangers = [ghost, one(rows, "py without distinct id")["distinct_id"]]
    listed = ", ".join(f"'{distinct_id}'" for distinct_id in strangers)
    assert read(server, f"select * from persons where list_has_any(distinct_ids, [{listed}])") == []


def test_posthog_python_exception_and_survey_shown(server: Server) -> None:
    """posthog-python's `capture_exception` for a stranger makes no person (PostHog's error
    tracking only reads persons) and, for a known user, leaves the person as it is; a `survey shown`
    it sends sets the person's `$survey_last_seen_date` to the timestamp it wrote."""
    token = "phc_python_exceptions"
    run_id = uuid.uuid4().hex
    stranger, user = f"py-stranger-{run_id}", f"py-user-{run_id}"
    client = posthog.Posthog(token, host=server.url, sync_mode=True)
    try:
        # posthog-python sends an exception object once: each call gets its own.
        client.capture_exception(ValueError("boom"), distinct_id=stranger, properties={"$set": {"crashed": True}})
        client.capture("py signed up", distinct_id=user, properties={"$set": {"plan": "pro"}})
        client.capture_exception(ValueError("boom"), distinct_id=user, properties={"$set": {"plan": "crashed"}})
        client.capture("survey shown", distinct_id=user, properties={"$survey_id": "0190-survey"})
    finally:
        client.shutdown()
    rows = events_of(server, token, {"$exception", "py signed up", "survey shown"})
    crashes = {row["distinct_id"]: row for row in rows if row["event"] == "$exception"}
    assert crashes[stranger]["properties"]["$exception_list"][0]["type"] == "ValueError"
    assert crashes[stranger]["person_id"] == person_uuid(token, stranger)
    assert crashes[stranger]["person_properties"] == {}
    assert read(server, f"select * from persons where list_contains(distinct_ids, '{stranger}')") == []
    assert has(crashes[user]["person_properties"], plan="pro")
    assert "$set" not in crashes[user]["properties"]

    shown = one(rows, "survey shown")
    seen = shown["properties"]["$set"]["$survey_last_seen_date"]
    latest = latest_person(server, token, user, lambda row: "$survey_last_seen_date" in row["merged_properties"])
    assert has(latest["merged_properties"], plan="pro", **{"$survey_last_seen_date": seen})
