"""Events whose person handling PostHog decides by their name: exceptions, which its error tracking
ingests apart and which never make or change a person, and `survey shown`, which records when the
person last saw a survey."""

from __future__ import annotations

from tests.conftest import Hogflare
from tests.helpers.persons import PERSONLESS_CREATED_AT, at, capture, day, person_of, person_uuid, send

EXCEPTION = {
    "$exception_list": [{"type": "ValueError", "value": "boom", "mechanism": {"handled": True}}],
    "$exception_level": "error",
}


async def test_an_exception_makes_and_changes_no_person(hogflare: Hogflare) -> None:
    """PostHog's error tracking only reads persons: an exception from a distinct id without one is
    personless and makes none (the visitor's person is made by its first other event, with that
    event's initial properties), and a known person's row carries the person as it is, without the
    exception's `$set` and `$set_once`, which are dropped from the row too."""
    update = {"$set": {"plan": "crashed"}, "$set_once": {"first": "crash"}, "$current_url": "https://x/crash"}
    await send(hogflare, capture("visitor", {**EXCEPTION, **update}, "$exception", timestamp=at(1)))
    [crash] = hogflare.rows()
    assert (crash["person_id"], crash["person_properties"]) == (person_uuid("visitor"), {})
    assert crash["person_created_at"] == PERSONLESS_CREATED_AT
    assert hogflare.persons() == []
    assert "$set" not in crash["properties"]
    assert "$set_once" not in crash["properties"]
    assert crash["properties"]["$exception_list"] == EXCEPTION["$exception_list"]

    await send(hogflare, capture("visitor", {"$current_url": "https://x/landing"}, "$pageview", timestamp=at(2)))
    person = person_of(hogflare, "visitor")
    assert person["created_at"] == day(2)
    assert person["merged_properties"]["$initial_current_url"] == "https://x/landing"

    await send(hogflare, capture("visitor", {**EXCEPTION, **update}, "$exception", timestamp=at(3)))
    known = hogflare.rows("event = '$exception'", order="timestamp")[-1]
    assert known["person_id"] == person["person_id"]
    assert known["person_properties"] == person["merged_properties"]
    assert "plan" not in person_of(hogflare, "visitor")["merged_properties"]
    assert [row["version"] for row in hogflare.persons(order="updated_at, version")] == [0, 0]


async def test_an_exception_claims_no_group_type(hogflare: Hogflare) -> None:
    """Error tracking maps an exception's `$groups` to the types the project has, and adds none."""
    await send(hogflare, capture("u", {"$groups": {"company": "acme"}}, "view", timestamp=at(1)))
    grouped = {**EXCEPTION, "$groups": {"company": "acme", "team": "red"}}
    await send(hogflare, capture("u", grouped, "$exception", timestamp=at(2)))
    await send(hogflare, capture("u", {"$groups": {"team": "blue"}}, "view", timestamp=at(3)))
    rows = hogflare.rows(order="timestamp")
    assert [(row["event"], row["group0"], row["group1"]) for row in rows] == [
        ("view", "acme", None),
        ("$exception", "acme", None),
        ("view", None, "blue"),
    ]


async def test_survey_shown_records_when_the_person_last_saw_a_survey(hogflare: Hogflare) -> None:
    """PostHog sets the person's `$survey_last_seen_date` to a `survey shown` event's timestamp as
    the client sent it, in the event's `$set` (where the row shows it), unless that `$set` already
    names it."""
    shown = {"$survey_id": "0190-survey", "$set": {"plan": "pro"}}
    sent_at = "2024-01-03T10:00:00.123Z"
    await send(hogflare, capture("u", shown, "survey shown", timestamp=sent_at))
    [row] = hogflare.rows()
    assert row["properties"]["$set"] == {"plan": "pro", "$survey_last_seen_date": sent_at}
    assert person_of(hogflare, "u")["merged_properties"]["$survey_last_seen_date"] == sent_at

    chosen = {"$survey_id": "0190-survey", "$set": {"$survey_last_seen_date": "2024-01-01"}}
    await send(hogflare, capture("u", chosen, "survey shown", timestamp=at(4)))
    assert person_of(hogflare, "u")["merged_properties"]["$survey_last_seen_date"] == "2024-01-01"
    # Other survey events, and one sent without a timestamp, leave it alone.
    await send(hogflare, capture("u", {"$survey_id": "0190-survey"}, "survey dismissed", timestamp=at(5)))
    await send(hogflare, capture("u", {"$survey_id": "0190-survey"}, "survey shown"))
    assert person_of(hogflare, "u")["merged_properties"]["$survey_last_seen_date"] == "2024-01-01"
    assert "$set" not in hogflare.rows("event = 'survey shown'", order="timestamp")[-1]["properties"]


async def test_survey_shown_from_a_located_client_keeps_its_batch(hogflare: Hogflare) -> None:
    """The survey's `$survey_last_seen_date` and GeoIP's properties go into one `$set` the event
    already has (two defaults spliced into one object), and the batch lands whole."""
    shown = {"$survey_id": "0190-survey", "$set": {"plan": "pro"}}
    await send(
        hogflare,
        capture("v", {}, "$pageview", timestamp=at(1)),
        capture("v", shown, "survey shown", timestamp="2024-01-02T00:00:00Z"),
        headers={"cf-connecting-ip": "8.8.8.8"},
    )
    rows = hogflare.rows(order="timestamp")
    assert [row["event"] for row in rows] == ["$pageview", "survey shown"]
    survey_set = rows[1]["properties"]["$set"]
    assert (survey_set["plan"], survey_set["$survey_last_seen_date"]) == ("pro", "2024-01-02T00:00:00Z")
    assert survey_set["$geoip_country_code"] == "US"
