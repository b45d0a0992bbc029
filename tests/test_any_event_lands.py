"""A property test: whatever an accepted event carries besides its name, distinct id and uuid
(timestamps of any shape, any properties, person and group updates of any type, identity
operations on any ids), it lands in the lake exactly once (but for an identity or group event
sent with person processing off, which PostHog discards), the persons and groups it made are
readable, the Cloudflare Pipelines streams take its rows, and shipping never stalls on it.

A row the lake refuses stops its table's shipping for every later row, so an event that is
answered 200 but cannot be written, committed or read back is worse than one refused."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import TOKEN
from tests.helpers.persons import started
from tests.helpers.stream import FakeStream

#: Lone surrogates included (half an emoji, as a JavaScript string cut inside one sends it): each
#: stands in as U+FFFD, as PostHog's capture replaces it.
TEXT = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=40)
NUMBERS = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 1e308, -1e-308, 2**53 + 1, 1e15, 253402300800000, -62135596800001]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)
#: Dates at and past every edge the decoder, Parquet, pyiceberg and DuckDB each have.
TIMESTAMPS = st.one_of(
    st.sampled_from(
        [
            "0000-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999Z",
            "1970-01-01T00:00:00Z",
            "2024-02-29T12:00:00+14:00",
            "2024-02-30T00:00:00Z",
            "2024-06-01 10:00:00",
            "2024-06-01T10:00:00.123456789-23:59",
            "9999-12-31T23:59:59.999Z",
            "10000-01-01T00:00:00Z",
            "-0001-01-01T00:00:00Z",
            "+002024-01-01T00:00:00Z",
            "1e20",
            "",
            " ",
        ]
    ),
    st.datetimes().map(lambda moment: moment.isoformat() + "Z"),
    NUMBERS,
    JSON,
)
#: Ids PostHog treats specially, ids at the length limit, and ids of other JSON types (an id
#: that is blank once trimmed is dropped, so it is not one of them).
IDS = st.one_of(
    TEXT.filter(str.strip),
    st.sampled_from(["anonymous", "null", "0", "undefined", "[object Object]", "guest", "a" * 300, "x\x00y", " x "]),
    st.integers(),
)
PERSON_KEYS = [
    "$set",
    "$set_once",
    "$unset",
    "$groups",
    "$group_type",
    "$group_key",
    "$group_set",
    "$process_person_profile",
    "$anon_distinct_id",
    "alias",
    "$current_url",
    "$referrer",
    "$referring_domain",
    "utm_source",
    "gclid",
    "$browser",
    "$os",
    "$ip",
    "$geoip_disable",
    "$session_id",
    "$window_id",
    "$device_id",
    "$lib",
    "$ignore_sent_at",
    "$exception_list",
]
NAMES = st.one_of(
    st.sampled_from(
        [
            "$pageview",
            "$identify",
            "$create_alias",
            "$merge_dangerously",
            "$groupidentify",
            "$set",
            "$exception",
            "$ai_generation",
            "$snapshot",
        ]
    ),
    TEXT.filter(bool),
)
#: Every event route takes a batch envelope; Hogflare's own routes read their items in their ways.
ROUTES = ["/batch/", "/e/", "/i/v0/e/", "/capture/", "/track/", "/engage/", "/identify/", "/alias/", "/groups/"]
PROPERTY_VALUES = st.one_of(
    JSON,
    IDS,
    st.dictionaries(st.one_of(TEXT, st.sampled_from(PERSON_KEYS)), JSON, max_size=5),
    st.lists(TEXT, max_size=3),
)


@st.composite
def item(draw: st.DrawFn, uuid: str) -> dict[str, Any]:
    properties = draw(st.dictionaries(st.one_of(st.sampled_from(PERSON_KEYS), TEXT), PROPERTY_VALUES, max_size=8))
    fields: dict[str, Any] = {"event": draw(NAMES), "distinct_id": draw(IDS), "uuid": uuid, "properties": properties}
    for name, values in [("timestamp", TIMESTAMPS), ("sent_at", TIMESTAMPS), ("offset", TIMESTAMPS)]:
        if draw(st.booleans()):
            fields[name] = draw(values)
    for name in ("$set", "$set_once"):
        if draw(st.booleans()):
            fields[name] = draw(PROPERTY_VALUES)
    return fields


@st.composite
def request(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 6))
    uuids = [f"01890000-0000-7000-8000-{index:012x}" for index in range(count)]
    body: dict[str, Any] = {"api_key": TOKEN, "batch": [draw(item(uuid)) for uuid in uuids]}
    if draw(st.booleans()):
        body["sent_at"] = draw(TIMESTAMPS)
    if draw(st.booleans()):
        body["historical_migration"] = draw(st.booleans())
    return body


#: Discarded, as PostHog's ingestion does, when sent with person processing off.
REFUSED_WITHOUT_PERSON = {"$identify", "$create_alias", "$merge_dangerously", "$groupidentify"}


def discarded(item: dict[str, Any]) -> bool:
    properties = item["properties"]
    if item["event"] in REFUSED_WITHOUT_PERSON and properties.get("$process_person_profile") is False:
        return True
    # PostHog's ingestion discards a group identify with a key over 400 characters (as JavaScript
    # counts them) or a `$group_set` that is not an object.
    if item["event"] != "$groupidentify":
        return False
    key = properties.get("$group_key")
    key_text = key if isinstance(key, str) else json.dumps(key) if isinstance(key, (int, float)) else ""
    too_long = len(key_text.encode("utf-16-le", "surrogatepass")) // 2 > 400
    group_set = properties.get("$group_set")
    return too_long or (group_set is not None and not isinstance(group_set, dict))


def whole(value: Any) -> Any:
    """``value`` as it is stored: each lone surrogate in its strings and keys is U+FFFD."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if isinstance(value, list):
        return [whole(item) for item in value]
    if isinstance(value, dict):
        return {whole(key): whole(item) for key, item in value.items()}
    return value


def expected_id(distinct_id: Any) -> str:
    text: str = whole(distinct_id if isinstance(distinct_id, str) else json.dumps(distinct_id))
    return text.replace("\x00", "\ufffd")[:200]


@pytest.mark.timeout(900)
@settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=request(), route=st.sampled_from(ROUTES))
def test_every_accepted_event_lands_once_and_shipping_goes_on(
    tmp_path_factory: pytest.TempPathFactory, body: dict[str, Any], route: str
) -> None:
    async def scenario() -> None:
        async with started(tmp_path_factory.mktemp("any") / "data") as hogflare:
            response = await hogflare.post(route, content=json.dumps(body).encode())
            assert (response.status_code, response.json()) == (200, {"status": 1}), response.text
            rows = hogflare.rows(order="uuid")
            sent = [item for item in body["batch"] if not discarded(item)]
            assert [row["uuid"] for row in rows] == [item["uuid"] for item in sent]
            assert [row["distinct_id"] for row in rows] == [expected_id(item["distinct_id"]) for item in sent]
            # Every person snapshot and group row is readable, and the rows go on landing after it.
            hogflare.persons()
            hogflare.groups()
            after = {"api_key": TOKEN, "batch": [{"event": "after", "distinct_id": "later"}]}
            assert (await hogflare.post("/batch/", after)).status_code == 200
            assert [row["event"] for row in hogflare.rows("distinct_id = 'later'")] == ["after"]

    asyncio.run(scenario())


SESSION_IDS = st.text(st.sampled_from("abcdefABCDEF0123456789-"), min_size=1, max_size=70)


@st.composite
def recording(draw: st.DrawFn, uuid: str) -> dict[str, Any]:
    """A ``/s/`` item as posthog-js sends it, its rrweb events and everything else of any shape."""
    properties = draw(st.dictionaries(st.one_of(st.sampled_from(PERSON_KEYS), TEXT), PROPERTY_VALUES, max_size=6))
    properties["$session_id"] = draw(SESSION_IDS)
    properties["$snapshot_data"] = draw(st.one_of(st.lists(JSON, max_size=4), st.dictionaries(TEXT, JSON, max_size=4)))
    fields: dict[str, Any] = {
        "event": draw(st.sampled_from(["$snapshot", "$snapshot_items"])),
        "uuid": uuid,
        "properties": properties,
    }
    fields["distinct_id" if draw(st.booleans()) else "$distinct_id"] = draw(IDS)
    for name in ("timestamp", "offset", "sent_at"):
        if draw(st.booleans()):
            fields[name] = draw(TIMESTAMPS)
    return fields


@pytest.mark.timeout(900)
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.integers(1, 4).flatmap(
        lambda n: st.tuples(*(recording(f"01890000-0000-7000-8000-{i:012x}") for i in range(n)))
    )
)
def test_every_accepted_recording_lands_once(
    tmp_path_factory: pytest.TempPathFactory, items: tuple[dict[str, Any], ...]
) -> None:
    async def scenario() -> None:
        async with started(tmp_path_factory.mktemp("recordings") / "data") as hogflare:
            body = [{**item, "properties": {**item["properties"], "token": TOKEN}} for item in items]
            response = await hogflare.post("/s/", content=json.dumps(body).encode())
            assert response.status_code == 200, response.text
            rows = hogflare.rows(order="uuid")
            assert [row["uuid"] for row in rows] == [item["uuid"] for item in items]
            assert {row["event"] for row in rows} == {"$snapshot_items"}
            for row, item in zip(rows, items, strict=True):
                data = whole(item["properties"]["$snapshot_data"])
                assert row["properties"]["$snapshot_items"] == (data if isinstance(data, list) else [data])
                assert row["properties"]["$session_id"] == item["properties"]["$session_id"]

    asyncio.run(scenario())


@pytest.mark.timeout(900)
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=request())
def test_every_accepted_event_reaches_the_streams(
    tmp_path_factory: pytest.TempPathFactory, fake_process: FakeStream, body: dict[str, Any]
) -> None:
    fake_process.reset()

    async def scenario() -> None:
        async with started(
            tmp_path_factory.mktemp("streams") / "data",
            pipeline_endpoint=f"{fake_process.url}/",
            persons_pipeline_endpoint=f"{fake_process.url}/p",
        ) as hogflare:
            response = await hogflare.post("/batch/", content=json.dumps(body).encode())
            assert response.status_code == 200, response.text
            lake = hogflare.rows(order="uuid")  # drains both sinks
            sent = [item["uuid"] for item in body["batch"] if not discarded(item)]
            events = sorted(fake_process.events(), key=lambda row: row["uuid"])
            assert [row["uuid"] for row in events] == [row["uuid"] for row in lake] == sent
            assert [row["properties"] for row in events] == [row["properties"] for row in lake]
            snapshots = [row for row in fake_process.rows() if "operation" in row]
            assert len(snapshots) == len(hogflare.persons())

    asyncio.run(scenario())
