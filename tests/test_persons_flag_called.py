"""`$feature_flag_called`, which every SDK sends when a flag is read: as on PostHog, personful
when its distinct id has a person (or it names a group, or asks for person processing), else
personless, so that a server's flag checks make no person of an id nothing else names."""

from __future__ import annotations

from typing import Any

from tests.conftest import Hogflare
from tests.helpers.persons import PERSONLESS_CREATED_AT, at, capture, identify, person_of, person_uuid, send

FLAG = {"$feature_flag": "beta", "$feature_flag_response": True}


def flag_called(distinct_id: str, day: int, **properties: Any) -> dict[str, Any]:
    return capture(distinct_id, {**FLAG, **properties}, "$feature_flag_called", timestamp=at(day))


async def test_a_flag_read_for_a_stranger_is_personless_until_the_id_has_a_person(hogflare: Hogflare) -> None:
    await send(hogflare, flag_called("stranger", 1, **{"$set": {"seen_flag": True}}))
    [row] = hogflare.rows()
    assert (row["person_id"], row["person_properties"]) == (person_uuid("stranger"), {})
    assert row["person_created_at"] == PERSONLESS_CREATED_AT
    # As PostHog rewrites it: no person updates, and marked personless.
    assert {key: row["properties"][key] for key in row["properties"] if key != "$ip"} == {
        **FLAG,
        "$process_person_profile": False,
    }
    assert hogflare.persons() == []

    # The id is remembered as personless: identified later, its person keeps the uuid the flag
    # read's row has, so the row goes with it.
    await send(hogflare, identify("user", "stranger", {"$set": {"plan": "pro"}}, timestamp=at(2)))
    assert person_of(hogflare, "user")["person_id"] == person_uuid("stranger")

    # Now the id has a person, its flag reads are personful: their `$set` lands.
    await send(hogflare, flag_called("stranger", 3, **{"$set": {"seen_flag": True}}))
    person = person_of(hogflare, "user")
    assert person["merged_properties"]["seen_flag"] is True
    last = hogflare.rows("event = '$feature_flag_called'", order="timestamp")[-1]
    assert (last["person_id"], last["person_properties"]["plan"]) == (person["person_id"], "pro")
    assert "$process_person_profile" not in last["properties"]


async def test_a_flag_read_naming_a_group_or_asking_for_a_person_is_personful(hogflare: Hogflare) -> None:
    await send(
        hogflare,
        flag_called("grouped", 1, **{"$groups": {"company": "acme"}}),
        flag_called("asked", 1, **{"$process_person_profile": True}),
        flag_called("declined", 1, **{"$process_person_profile": False}),
    )
    assert sorted(person["distinct_ids"][0] for person in hogflare.persons_latest()) == ["asked", "grouped"]
    grouped = hogflare.rows("distinct_id = 'grouped'")[0]
    assert grouped["group0"] == "acme"
