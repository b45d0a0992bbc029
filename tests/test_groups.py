"""Groups: ``$groupidentify`` on every route, group type slots, and the group columns of events."""

from __future__ import annotations

import gc
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hogflare.config import Settings
from hogflare.store import group_type_conflicts
from tests.conftest import TOKEN, Hogflare
from tests.helpers.persons import at, capture, person_uuid, post_ok, send, started
from tests.helpers.server import HOGFLARE, free_port


def group_identify(group_type: str, key: str, props: dict[str, Any], distinct_id: str = "u") -> dict[str, Any]:
    """posthog-python's and posthog-node's ``group_identify`` item."""
    properties = {"$group_type": group_type, "$group_key": key, "$group_set": props}
    return capture(distinct_id, properties, "$groupidentify")


GROUP_BODIES: list[tuple[str, str, Any]] = [
    ("/e", "/e", [{**group_identify("company", "acme", {"name": "Acme"}), "token": TOKEN}]),
    ("/i/v0/e", "/i/v0/e", [{**group_identify("company", "acme", {"name": "Acme"}), "token": TOKEN}]),
    ("/capture", "/capture", {"api_key": TOKEN, **group_identify("company", "acme", {"name": "Acme"})}),
    ("/batch", "/batch", {"api_key": TOKEN, "batch": [group_identify("company", "acme", {"name": "Acme"})]}),
    ("/groups", "/groups",
     {"api_key": TOKEN, "group_type": "company", "group_key": "acme", "properties": {"name": "Acme"}}),
    ("/groups with $group_set", "/groups",
     {"api_key": TOKEN,
      "properties": {"$group_type": "company", "$group_key": "acme", "$group_set": {"name": "Acme"}}}),
    ("/batch type groupidentify", "/batch",
     {"api_key": TOKEN, "batch": [{"type": "groupidentify", "distinct_id": "u", "properties": {
         "$group_type": "company", "$group_key": "acme", "$group_set": {"name": "Acme"}}}]}),
    # Hogflare's shapes: the type and key unprefixed among the properties, or at a typed item's top.
    ("/groups unprefixed in properties", "/groups",
     {"api_key": TOKEN, "properties": {"group_type": "company", "group_key": "acme", "name": "Acme"}}),
    ("/batch type groupidentify at the top", "/batch",
     {"api_key": TOKEN, "batch": [{"type": "groupidentify", "distinct_id": "u", "group_type": "company",
                                   "group_key": "acme", "properties": {"$group_set": {"name": "Acme"}}}]}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "path", "body"), GROUP_BODIES, ids=[case[0] for case in GROUP_BODIES])
async def test_groupidentify_on_every_route(hogflare: Hogflare, case: str, path: str, body: Any) -> None:
    await post_ok(hogflare, path, body)
    [group] = hogflare.groups()
    assert {key: group[key] for key in ("api_key", "group_type", "group_type_index", "group_key")} == {
        "api_key": TOKEN,
        "group_type": "company",
        "group_type_index": 0,
        "group_key": "acme",
    }
    assert group["group_properties"] == {"name": "Acme"}
    [row] = hogflare.rows()
    assert row["event"] == "$groupidentify"
    assert row["group0"] == "acme"
    assert row["group_properties"] == {"company": {"name": "Acme"}}
    if path == "/groups":
        # hogflare's own route: its distinct id is the group's key, not a person's.
        assert row["person_id"] is None
        assert hogflare.persons() == []
    else:
        # As on PostHog, the group identify goes with its distinct id's person, made for it.
        [person] = hogflare.persons_latest()
        assert (row["person_id"], person["distinct_ids"]) == (person["person_id"], ["u"])


async def test_hogflares_shapes_keep_posthogs_rules(hogflare: Hogflare) -> None:
    """A typed group identify without a distinct id is named after its group, as on `/groups`; a
    key over 400 characters is discarded however it is named; the token is no group property."""
    too_long = {"group_type": "company", "group_key": "k" * 401}
    await post_ok(hogflare, "/groups", {"api_key": TOKEN, "properties": too_long})
    await post_ok(hogflare, "/groups", {"properties": {"token": TOKEN, "group_type": "company", "group_key": "acme"}})
    typed = {"type": "groupidentify", "group_type": "team", "group_key": "red", "properties": {"$group_set": {"n": 1}}}
    await post_ok(hogflare, "/batch", {"api_key": TOKEN, "batch": [typed]})
    rows = hogflare.rows(order="distinct_id")
    assert [(row["distinct_id"], row["group_properties"]) for row in rows] == [
        ("acme", {"company": {}}),
        ("red", {"team": {"n": 1}}),
    ]


async def test_group_set_is_a_set(hogflare: Hogflare) -> None:
    await send(
        hogflare,
        {**group_identify("company", "acme", {"name": "Acme", "plan": "free"}), "timestamp": at(1)},
        {**group_identify("company", "acme", {"plan": "pro", "seats": 5}), "timestamp": at(2)},
    )
    [group] = hogflare.groups()
    assert group["group_properties"] == {"name": "Acme", "plan": "pro", "seats": 5}
    rows = hogflare.rows(order="timestamp")
    assert [row["group_properties"]["company"] for row in rows] == [
        {"name": "Acme", "plan": "free"},
        {"name": "Acme", "plan": "pro", "seats": 5},
    ]


async def test_group_set_writes_a_value_unless_it_deeply_equals_the_one_held(hogflare: Hogflare) -> None:
    """PostHog writes a `$group_set` value unless it deeply equals the one held: `"2"` replaces
    `2`, `""` replaces `0`, `1` replaces `true`; `1.0` is `1`, and an equal object (in any key
    order) changes nothing, so a group identified again with what it has keeps its version."""
    held = {"n": 2, "z": 0, "b": True, "f": 1, "o": {"k": 1, "l": [1, {"m": None}]}}
    same = {"f": 1.0, "o": {"l": [1, {"m": None}], "k": 1}}
    sent = {"n": "2", "z": "", "b": 1, "o": {"k": 1, "l": [1, {"m": None}], "x": 0}, "new": None}
    await send(
        hogflare,
        {**group_identify("company", "deep", held), "timestamp": at(1)},
        {**group_identify("company", "deep", same), "timestamp": at(2)},
    )
    unchanged = hogflare.rows(order="timestamp")
    assert unchanged[0]["group_properties"] == unchanged[1]["group_properties"] == {"company": held}
    await send(hogflare, {**group_identify("company", "deep", sent), "timestamp": at(3)})
    [group] = hogflare.groups()
    assert group["group_properties"] == {
        "n": "2",
        "z": "",
        "b": 1,
        "f": 1,
        "o": {"k": 1, "l": [1, {"m": None}], "x": 0},
        "new": None,
    }


async def test_a_group_named_by_what_javascript_reads_as_false_is_not_identified(hogflare: Hogflare) -> None:
    """PostHog's group step skips a `$groupidentify` whose type or key is `0`, `false` or `""`; the
    event itself is stored, with its person."""
    falsy = [("team", 0), ("team", False), ("team", ""), (0, "red"), ("team", 0.0)]
    await send(
        hogflare,
        group_identify("team", "1", {"n": 1}),
        *[
            capture("u", {"$group_type": kind, "$group_key": key, "$group_set": {"n": 1}}, "$groupidentify")
            for kind, key in falsy
        ],
        # posthog-js also names the group in `$groups`, which the row maps as PostHog's does.
        capture("u", {"$group_type": "team", "$group_key": 0, "$groups": {"team": 0}}, "$groupidentify"),
    )
    assert [(group["group_type"], group["group_key"]) for group in hogflare.groups()] == [("team", "1")]
    rows = hogflare.rows("event = '$groupidentify'")
    assert len(rows) == len(falsy) + 2
    assert sorted(row["group0"] or "" for row in rows) == ["", "", "", "", "", "0", "1"]


async def test_groupidentify_goes_with_the_person_and_leaves_it_alone(hogflare: Hogflare) -> None:
    await send(hogflare, capture("u", {"$set": {"a": 1}}))
    item = group_identify("company", "acme", {"name": "Acme"}, distinct_id="u")
    item["properties"]["$set"] = {"a": 2}
    await send(hogflare, item)
    [person] = hogflare.persons_latest()
    assert person["merged_properties"] == {"a": 1}
    first, second = hogflare.persons()
    assert second["version"] == first["version"]
    group_row = hogflare.rows("event = '$groupidentify'")[0]
    assert (group_row["person_id"], group_row["person_properties"]) == (person["person_id"], {"a": 1})


async def test_a_personless_event_is_not_given_its_groups(hogflare: Hogflare) -> None:
    """PostHog maps an event's `$groups` to group columns only when it processes a person."""
    await send(hogflare, group_identify("company", "acme", {"name": "Acme"}))
    personless = {"$groups": {"company": "acme"}, "$process_person_profile": False, "$group_0": "client-sent"}
    await send(hogflare, capture("anon", personless, "view"))
    [view] = hogflare.rows("event = 'view'")
    assert view["group0"] is None
    assert view["group_properties"] is None
    assert view["properties"]["$groups"] == {"company": "acme"}
    # Not even the group column the client wrote: PostHog's `createEvent` drops them.
    assert "$group_0" not in view["properties"]
    assert view["properties"]["$process_person_profile"] is False


async def test_a_group_type_named_without_a_key_takes_its_slot(hogflare: Hogflare) -> None:
    """posthog-python's ``groups={"company": user.company_id}`` for a user with no company: PostHog
    gives ``company`` its slot whatever the key, so later types are numbered as PostHog numbers them."""
    await send(
        hogflare,
        capture("u", {"$groups": {"company": None}}, "signed up"),
        capture("u", {"$groups": {"project": "p1"}}, "opened"),
        group_identify("company", "c1", {"name": "C1"}),
        capture("u", {"$groups": {"company": "c1", "project": "p1"}}, "clicked"),
    )
    rows = {row["event"]: row for row in hogflare.rows()}
    assert [rows["signed up"][f"group{slot}"] for slot in range(2)] == [None, None]
    assert [rows["opened"][f"group{slot}"] for slot in range(2)] == [None, "p1"]
    assert [rows["clicked"][f"group{slot}"] for slot in range(2)] == ["c1", "p1"]
    assert rows["clicked"]["group_properties"] == {"company": {"name": "C1"}, "project": {}}
    assert [(g["group_type"], g["group_type_index"]) for g in hogflare.groups()] == [("company", 0)]


async def test_groupidentify_keeps_no_person_updates(hogflare: Hogflare) -> None:
    """PostHog strips `$set`, `$set_once` and `$unset` from a `$groupidentify`: it changes no person."""
    item = group_identify("company", "acme", {"name": "Acme"})
    item["properties"].update({"$set": {"a": 2}, "$set_once": {"b": 1}, "$unset": ["c"]})
    await send(hogflare, {**item, "$set": {"top": 1}})
    [row] = hogflare.rows()
    assert not {"$set", "$set_once", "$unset"} & row["properties"].keys()
    assert row["properties"]["$group_set"] == {"name": "Acme"}


async def test_the_group_identified_wins_over_groups_of_its_type(hogflare: Hogflare) -> None:
    await send(hogflare, group_identify("company", "acme", {"name": "Acme"}))
    item = group_identify("company", "newco", {"name": "New"})
    item["properties"]["$groups"] = {"company": "acme", "project": "p1"}
    await send(hogflare, item)
    await send(hogflare, capture("u", {"$groups": {"company": "newco"}}, "click"))
    [click] = hogflare.rows("event = 'click'")
    assert click["group_properties"] == {"company": {"name": "New"}}
    groups = {group["group_key"]: group for group in hogflare.groups()}
    assert groups["newco"]["group_properties"] == {"name": "New"}
    assert groups["newco"]["group_type_index"] == 0
    assert groups["acme"]["group_properties"] == {"name": "Acme"}


async def test_two_group_types_may_share_a_key(hogflare: Hogflare) -> None:
    """Organization 1 and project 1: each group keeps its own type's slot."""
    await send(hogflare, group_identify("organization", "1", {"name": "Org"}))
    item = group_identify("project", "1", {"name": "Project"})
    # posthog-js sends the groups the page is in with every event, this one's too.
    item["properties"]["$groups"] = {"organization": "1", "project": "1"}
    await send(hogflare, item)
    groups = {group["group_type"]: group for group in hogflare.groups()}
    assert (groups["organization"]["group_type_index"], groups["organization"]["group_properties"]) == (
        0,
        {"name": "Org"},
    )
    assert (groups["project"]["group_type_index"], groups["project"]["group_properties"]) == (
        1,
        {"name": "Project"},
    )
    identify = hogflare.rows("event = '$groupidentify'")
    assert sorted(row["properties"]["$group_type_index"] for row in identify) == [0, 1]


async def test_group_types_of_any_name_are_read_back(hogflare: Hogflare) -> None:
    names = ['say "hi"', "a/b", "c~d", "e.f"]
    await send(hogflare, *(group_identify(name, f"key-{i}", {"i": i}) for i, name in enumerate(names)))
    groups = {group["group_type"]: group for group in hogflare.groups()}
    assert {name: (groups[name]["group_type_index"], groups[name]["group_properties"]) for name in names} == {
        name: (i, {"i": i}) for i, name in enumerate(names)
    }


async def test_group_keys_of_the_event_replace_what_the_client_sent(hogflare: Hogflare) -> None:
    properties = {"$groups": {"company": "acme"}, "$group_0": "client-sent", "note": "the $group_1 key is absent"}
    await send(hogflare, capture("u", properties, "click"))
    [row] = hogflare.rows()
    assert row["properties"]["$group_0"] == "acme"
    assert row["properties"]["note"] == "the $group_1 key is absent"
    assert "$group_1" not in row["properties"]


async def test_events_carry_their_groups(hogflare: Hogflare) -> None:
    await send(hogflare, group_identify("company", "acme", {"name": "Acme"}))
    await send(hogflare, capture("u", {"$groups": {"company": "acme", "project": "p1"}, "$set": {"a": 1}}, "click"))
    [row] = hogflare.rows("event = 'click'")
    assert (row["properties"]["$group_0"], row["properties"]["$group_1"]) == ("acme", "p1")
    assert [row[f"group{slot}"] for slot in range(5)] == ["acme", "p1", None, None, None]
    assert row["group_properties"] == {"company": {"name": "Acme"}, "project": {}}
    assert row["person_id"] == person_uuid("u")
    assert row["person_properties"] == {"a": 1}
    # Events never create groups.
    assert [group["group_type"] for group in hogflare.groups()] == ["company"]


async def test_group_properties_as_of_the_event(hogflare: Hogflare) -> None:
    groups = {"$groups": {"company": "acme"}}
    await send(
        hogflare,
        capture("u", groups, "before"),
        group_identify("company", "acme", {"name": "Acme"}),
        capture("u", groups, "after"),
        group_identify("company", "acme", {"name": "Acme Inc"}),
    )
    before, after = (hogflare.rows(f"event = '{name}'")[0] for name in ("before", "after"))
    assert before["group_properties"] == {"company": {}}
    assert after["group_properties"] == {"company": {"name": "Acme"}}
    assert before["group0"] == after["group0"] == "acme"


async def test_at_most_five_group_types(hogflare: Hogflare) -> None:
    await send(hogflare, *(group_identify(f"type{i}", f"key{i}", {"i": i}) for i in range(6)))
    groups = hogflare.groups()
    assert [(g["group_type"], g["group_type_index"], g["group_key"]) for g in groups] == [
        (f"type{i}", i, f"key{i}") for i in range(5)
    ]
    # A sixth type gets no slot and makes no group, whatever other groups its event names.
    sixth = group_identify("type5", "key0", {"i": 5})
    sixth["properties"]["$groups"] = {"type0": "key0"}
    await send(hogflare, sixth)
    assert len(hogflare.groups()) == 5
    all_six = {f"type{i}": f"key{i}" for i in range(6)}
    await send(hogflare, capture("u", {"$groups": all_six}, "click"))
    [row] = hogflare.rows("event = 'click'")
    assert [row[f"group{slot}"] for slot in range(5)] == [f"key{i}" for i in range(5)]
    assert "$group_5" not in row["properties"]
    assert row["group_properties"] == {f"type{i}": {"i": i} for i in range(5)}


async def test_group_types_and_groups_survive_a_restart(tmp_path: Path) -> None:
    async with started(tmp_path / "data") as first:
        await send(first, group_identify("company", "acme", {"name": "Acme"}), capture("u", {"$groups": {"team": "t"}}))
    del first
    gc.collect()  # the first app's store is closed before the next one opens it, as across processes
    async with started(tmp_path / "data") as hogflare:
        await send(hogflare, capture("u", {"$groups": {"company": "acme", "team": "t", "org": "o"}}, "click"))
        [row] = hogflare.rows("event = 'click'")
        assert [row[f"group{slot}"] for slot in range(3)] == ["acme", "t", "o"]
        assert row["group_properties"] == {"company": {"name": "Acme"}, "team": {}, "org": {}}


async def test_fixed_group_type_slots(tmp_path: Path) -> None:
    env = {"POSTHOG_GROUP_TYPE_0": "organization", "POSTHOG_GROUP_TYPE_2": "company"}
    async with started(tmp_path / "data", env) as hogflare:
        await send(
            hogflare,
            group_identify("team", "t1", {"n": 1}),
            group_identify("company", "acme", {"n": 2}),
            capture("u", {"$groups": {"organization": "org", "company": "acme", "team": "t1", "desk": "d"}}, "click"),
        )
        groups = hogflare.groups()
        assert [(g["group_type"], g["group_type_index"]) for g in groups] == [("team", 1), ("company", 2)]
        [row] = hogflare.rows("event = 'click'")
        assert [row[f"group{slot}"] for slot in range(5)] == ["org", "t1", "acme", "d", None]
        assert {key: row["properties"][key] for key in ("$group_0", "$group_1", "$group_2", "$group_3")} == {
            "$group_0": "org",
            "$group_1": "t1",
            "$group_2": "acme",
            "$group_3": "d",
        }
        assert row["group_properties"] == {"organization": {}, "company": {"n": 2}, "team": {"n": 1}, "desk": {}}


async def test_a_fixed_slot_that_contradicts_the_stored_ones_is_refused(tmp_path: Path) -> None:
    """`company` took slot 0 on first sight; fixing slot 0 for `team` afterwards would write both
    types' events to one slot and merge their groups, so the server refuses to start, saying
    which project and slot; doctor says the same. Fixing it as stored is fine."""
    data_dir = tmp_path / "data"
    async with started(data_dir) as first:
        await send(first, group_identify("company", "acme", {"tier": "gold"}), group_identify("team", "red", {}))
    del first
    gc.collect()
    agrees = Settings.from_env({"POSTHOG_GROUP_TYPE_0": "company", "POSTHOG_GROUP_TYPE_1": "team"}, data_dir=data_dir)
    assert group_type_conflicts(agrees) == []
    env = {**os.environ, "POSTHOG_GROUP_TYPE_0": "team"}
    serve = [HOGFLARE, "serve", "--data-dir", str(data_dir), "--port", str(free_port())]
    result = subprocess.run(serve, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert f"project {TOKEN}: slot 0 holds 'company'" in result.stderr
    assert f"project {TOKEN}: 'team' holds slot 1, but POSTHOG_GROUP_TYPE_0 puts it at 0" in result.stderr
    doctor = subprocess.run(
        [HOGFLARE, "doctor", "--data-dir", str(data_dir)], env=env, capture_output=True, text=True, check=False
    )
    assert doctor.returncode == 1
    assert "slot 0 holds 'company'" in doctor.stdout


async def test_a_configured_slot_is_remembered_and_its_groups_read_back(tmp_path: Path) -> None:
    """A slot given by POSTHOG_GROUP_TYPE_<n> is kept like any other: the flags read its groups'
    properties, and giving the slot to another type afterwards is refused."""
    data_dir = tmp_path / "data"
    env = {"POSTHOG_GROUP_TYPE_0": "company"}
    async with started(data_dir, env) as first:
        await send(first, group_identify("company", "acme", {"tier": "gold"}))
        store = first.app.store
        assert store is not None
        assert json.loads(store.group_properties(TOKEN, '{"company": "acme"}')) == {"company": {"tier": "gold"}}
    del first, store
    gc.collect()
    assert group_type_conflicts(Settings.from_env(env, data_dir=data_dir)) == []
    swapped = Settings.from_env({"POSTHOG_GROUP_TYPE_0": "team"}, data_dir=data_dir)
    assert group_type_conflicts(swapped) == [
        f"project {TOKEN}: slot 0 holds 'company' since its first event there, but POSTHOG_GROUP_TYPE_0=team"
    ]
