"""Every encoding and envelope an SDK has used, each asserted by the rows that land in the lake."""

from __future__ import annotations

import base64
import json
import urllib.parse
import zlib
from typing import Any

import pytest

from tests.conftest import FIXTURES, TOKEN, Err, Hogflare, event, fixture_bytes, gz, make_settings, running
from tests.fixtures.lzstring_shim import compress_to_base64

EVENTS = [event("first", "user-a", properties={"n": 1}), event("second", "user-b", properties={"n": 2})]
JSON_EVENTS = json.dumps(EVENTS)


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def form(**fields: str) -> bytes:
    return urllib.parse.urlencode(fields).encode()


def lz64(text: str) -> str:
    return compress_to_base64(text)


def brotli_available() -> bytes:
    # A tiny brotli stream of JSON_EVENTS made by the `brotli` CLI is not available everywhere;
    # Python's zlib has no brotli, so build one with the raw "uncompressed meta-block" format.
    data = JSON_EVENTS.encode()
    assert len(data) < 65536
    # WBITS=16 window, ISLAST=0, then an uncompressed meta-block, then an empty last block.
    header = bytearray()
    bits = 0
    nbits = 0

    def put(value: int, count: int) -> None:
        nonlocal bits, nbits
        bits |= value << nbits
        nbits += count
        while nbits >= 8:
            header.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8

    put(0, 1)  # WBITS = 16
    put(0, 1)  # ISLAST = 0
    put(0, 2)  # MNIBBLES = 4
    put(len(data) - 1, 16)  # MLEN - 1
    put(1, 1)  # ISUNCOMPRESSED
    if nbits:
        put(0, 8 - nbits)
    tail = bytes([0x03])  # ISLAST = 1, ISLASTEMPTY = 1
    return bytes(header) + data + tail


# (name, path, query, headers, body)
CASES: list[tuple[str, str, str, dict[str, str], bytes]] = [
    ("json array", "/e/", "", {"content-type": "application/json"}, JSON_EVENTS.encode()),
    ("batch envelope", "/batch/", "", {}, json.dumps({"api_key": TOKEN, "batch": EVENTS}).encode()),
    ("token envelope", "/batch/", "", {}, json.dumps({"token": TOKEN, "batch": EVENTS}).encode()),
    ("data envelope", "/capture/", "", {}, json.dumps({"data": EVENTS, "api_key": TOKEN}).encode()),
    ("data envelope base64", "/capture/", "", {}, json.dumps({"data": b64(JSON_EVENTS), "api_key": TOKEN}).encode()),
    (
        "data envelope base64 hint",
        "/capture/",
        "",
        {},
        json.dumps({"data": b64(JSON_EVENTS), "compression": "base64", "api_key": TOKEN}).encode(),
    ),
    (
        "data envelope lz64",
        "/capture/",
        "",
        {},
        json.dumps({"data": lz64(JSON_EVENTS), "compression": "lz64", "api_key": TOKEN}).encode(),
    ),
    ("gzip no hint", "/i/v0/e/", "", {"content-type": "text/plain"}, gz(JSON_EVENTS)),
    (
        "gzip-js hint",
        "/e/",
        "compression=gzip-js&ver=1.100.0&_=1700000000000",
        {"content-type": "text/plain"},
        gz(JSON_EVENTS),
    ),
    (
        "content-encoding gzip",
        "/batch/",
        "",
        {"content-encoding": "gzip", "content-type": "application/json"},
        gz(JSON_EVENTS),
    ),
    ("content-encoding deflate", "/batch/", "", {"content-encoding": "deflate"}, zlib.compress(JSON_EVENTS.encode())),
    ("content-encoding br", "/batch/", "", {"content-encoding": "br"}, brotli_available()),
    # An encoding PostHog does not know is no hint; gzip is still found by its magic bytes.
    ("unknown content-encoding", "/batch/", "", {"content-encoding": "compress"}, JSON_EVENTS.encode()),
    ("content-encoding list", "/batch/", "", {"content-encoding": "gzip, deflate"}, gz(JSON_EVENTS)),
    # A proxy or client that adds bytes after the gzip stream: PostHog reads the one member.
    ("gzip then a newline", "/i/v0/e/", "", {"content-type": "text/plain"}, gz(JSON_EVENTS) + b"\n"),
    ("gzip then nul bytes", "/batch/", "", {"content-encoding": "gzip"}, gz(JSON_EVENTS) + b"\0\0"),
    ("whole body base64", "/i/v0/e/", "", {}, b64(JSON_EVENTS).encode()),
    ("base64 hint", "/e/", "compression=base64", {}, b64(JSON_EVENTS).encode()),
    # PostHog's capture acts on the gzip and lz64 hints only: JSON under a base64 hint is read.
    (
        "json under a base64 hint",
        "/e/",
        "compression=base64",
        {"content-type": "application/json"},
        JSON_EVENTS.encode(),
    ),
    ("base64 of gzip", "/e/", "compression=base64", {}, b64(gz(JSON_EVENTS)).encode()),
    ("form base64", "/e/", "", {"content-type": "application/x-www-form-urlencoded"}, form(data=b64(JSON_EVENTS))),
    (
        "form base64 compression field",
        "/e/",
        "",
        {"content-type": "application/x-www-form-urlencoded"},
        form(data=b64(JSON_EVENTS), compression="base64"),
    ),
    # urlencoding without escaping '+': the server must turn the spaces back into '+'.
    (
        "form plus repair",
        "/e/",
        "",
        {"content-type": "application/x-www-form-urlencoded"},
        b"data=" + b64(json.dumps([event(">>>", "user-a"), event("?>?", "user-b")])).encode(),
    ),
    (
        "form lz64",
        "/e/",
        "",
        {"content-type": "application/x-www-form-urlencoded"},
        form(data=lz64(JSON_EVENTS), compression="lz64"),
    ),
    ("query lz64 hint", "/e/", "compression=lz64", {"content-type": "text/plain"}, lz64(JSON_EVENTS).encode()),
    ("legacy double base64", "/e/", "", {}, b64(b64(JSON_EVENTS)).encode()),
    ("form body without form content type", "/e/", "", {"content-type": "text/plain"}, form(data=b64(JSON_EVENTS))),
    (
        "curl json labelled as form",
        "/capture",
        "",
        {"content-type": "application/x-www-form-urlencoded"},
        JSON_EVENTS.encode(),
    ),
]


@pytest.mark.parametrize(("name", "path", "query", "headers", "body"), CASES, ids=[case[0] for case in CASES])
async def test_encodings_and_envelopes(
    hogflare: Hogflare, name: str, path: str, query: str, headers: dict[str, str], body: bytes
) -> None:
    headers = {"x-posthog-api-key": TOKEN, **headers}
    url = f"{path}?{query}" if query else path
    response = await hogflare.post(url, body, headers=headers)
    assert response.status_code == 200, response.text
    rows = hogflare.rows(order="distinct_id")
    assert [row["distinct_id"] for row in rows] == ["user-a", "user-b"]
    assert all(row["api_key"] == TOKEN for row in rows)


def _fixture_meta(name: str) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return meta


#: How many events each recorded SDK request holds; the Rust tests read the same file.
RECORDED: dict[str, int] = json.loads((FIXTURES / "expected.json").read_text())


@pytest.mark.parametrize(("name", "expected"), sorted(RECORDED.items()))
async def test_recorded_sdk_requests(hogflare: Hogflare, name: str, expected: int) -> None:
    meta = _fixture_meta(name)
    url = f"{meta['path']}?{meta['query']}" if meta["query"] else meta["path"]
    response = await hogflare.post(url, fixture_bytes(f"{name}.body"), headers=meta["headers"])
    assert response.status_code == 200, response.text
    rows = hogflare.rows()
    assert len(rows) == expected
    assert {row["api_key"] for row in rows} == {"phc_fixture_token"}


async def test_client_uuid_is_the_row_uuid(hogflare: Hogflare) -> None:
    uuid = "0190f0f0-1111-7222-8333-444455556666"
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event(uuid=uuid)]})
    assert hogflare.rows()[0]["uuid"] == uuid


async def test_uuid_is_made_when_absent(hogflare: Hogflare) -> None:
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [event(), event(uuid="")]})
    uuids = [row["uuid"] for row in hogflare.rows()]
    assert len(set(uuids)) == 2
    assert all(u[14] == "7" for u in uuids), "generated uuids are UUIDv7"


async def test_top_level_set_merges_into_properties_and_wins(hogflare: Hogflare) -> None:
    item = event(properties={"$set": {"plan": "free", "seats": 1}})
    item.update({"$set": {"plan": "pro"}, "$set_once": {"first": "x"}})
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [item]})
    properties = hogflare.rows()[0]["properties"]
    assert properties["$set"] == {"plan": "pro", "seats": 1}
    assert properties["$set_once"] == {"first": "x"}


async def test_context_is_kept_and_unknown_keys_go_to_extra(hogflare: Hogflare) -> None:
    item = event(context={"app": "web"}, type="capture", library="posthog-ruby", library_version="1.0")
    await hogflare.post("/batch/", {"api_key": TOKEN, "batch": [item]})
    row = hogflare.rows()[0]
    assert row["context"] == {"app": "web"}
    assert row["extra"] == {"type": "capture", "library": "posthog-ruby", "library_version": "1.0"}


async def test_team_id_fills_from_settings(tmp_path: Any) -> None:
    async with running(make_settings(tmp_path / "data", team_id=42)) as hogflare:
        await hogflare.client.post("/batch/", json={"api_key": TOKEN, "batch": [event()]})
        assert hogflare.rows()[0]["team_id"] == 42


async def test_engage_without_event_is_identify(hogflare: Hogflare) -> None:
    await hogflare.post("/engage/", {"api_key": TOKEN, "distinct_id": "u", "$set": {"email": "a@b.c"}})
    row = hogflare.rows()[0]
    assert row["event"] == "$identify"
    assert row["properties"]["$set"] == {"email": "a@b.c"}


async def test_performance_events_are_dropped_silently(hogflare: Hogflare) -> None:
    response = await hogflare.post("/e/", [event("$performance_event", token=TOKEN)])
    assert response.status_code == 200
    assert hogflare.rows() == []


BAD_BODIES: list[tuple[str, bytes, dict[str, str], Err]] = [
    ("empty body", b"", {}, Err(400, "missing data payload")),
    ("not json", b"{nope", {}, Err(400, "invalid json")),
    ("json scalar", b"42", {}, Err(400, "expected a json object or array")),
    # Four letters are valid base64 too; the error names what was sent, not its decoding.
    ("json null", b"null", {}, Err(400, "expected a json object or array")),
    ("a word", b"abcd", {}, Err(400, "invalid json: Invalid JSON value at line 1 column 1")),
    ("empty batch", json.dumps({"api_key": TOKEN, "batch": []}).encode(), {}, Err(400, "holds no event")),
    ("bad gzip", b"\x1f\x8b\x08\x00garbage", {}, Err(400, "invalid gzip")),
    ("form without data", b"ver=1", {"content-type": "application/x-www-form-urlencoded"}, Err(400, "missing data")),
    ("invalid utf-8", b'[{"event":"\xff\xfe","distinct_id":"a","token":"t"}]', {}, Err(400, "invalid json")),
    ("deep nesting", b"[" * 10_000 + b"]" * 10_000, {}, Err(400, "nesting deeper than 256 levels")),
    ("only bad items", json.dumps([{"event": "x", "token": TOKEN}]).encode(), {}, Err(400, "missing_distinct_id")),
    (
        "10 MB string",
        json.dumps(event(token=TOKEN, properties={"blob": "x" * 10_000_000})).encode(),
        {},
        Err(413, "event_too_large"),
    ),
]


@pytest.mark.parametrize(("name", "body", "headers", "expected"), BAD_BODIES, ids=[case[0] for case in BAD_BODIES])
async def test_undecodable_bodies_are_400_with_a_reason(
    hogflare: Hogflare, name: str, body: bytes, headers: dict[str, str], expected: Err
) -> None:
    response = await hogflare.post("/e/", body, headers=headers)
    assert response.status_code == expected.status
    assert response.json()["status"] == 0
    assert expected.message in response.json()["error"]
    # ... and the server is fine afterwards.
    assert (await hogflare.post("/e/", event(token=TOKEN))).status_code == 200


async def test_a_distinct_id_of_spaces_is_kept_as_it_is(hogflare: Hogflare) -> None:
    # PostHog's capture refuses only an empty id; one of spaces names someone, untrimmed.
    batch = [event("spaces", "  "), {"event": "spaces in properties", "properties": {"distinct_id": " \t"}}]
    assert (await hogflare.post("/batch/", {"api_key": TOKEN, "batch": batch})).status_code == 200
    rows = hogflare.rows(order="event")
    assert [(row["event"], row["distinct_id"]) for row in rows] == [("spaces", "  "), ("spaces in properties", " \t")]


async def test_a_bad_item_never_sinks_its_batch(hogflare: Hogflare) -> None:
    batch = [
        event("kept-1"),
        {"event": "no distinct id"},
        event("empty distinct id", ""),
        {"event": "empty in properties", "properties": {"distinct_id": ""}},
        event("bad uuid", uuid="not-a-uuid"),
        {"distinct_id": "no event"},
        event("bad properties", properties="not an object"),
        # PostHog's capture refuses a `$cookieless_mode` that is not a boolean.
        event("cookieless mode not a boolean", properties={"$cookieless_mode": "yes"}),
        event("kept-2", properties={"$cookieless_mode": False}),
        event("kept-3"),
    ]
    response = await hogflare.post("/batch/", {"api_key": TOKEN, "batch": batch})
    assert response.status_code == 200
    assert [row["event"] for row in hogflare.rows(order="event")] == ["kept-1", "kept-2", "kept-3"]
