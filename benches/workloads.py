"""Request bodies for the benchmarks: realistic posthog-js events of about 1.5 kB."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable
from typing import Any

import msgspec

TOKEN = "phc_bench_token"
#: posthog-node's `/batch` request; posthog-js's unbatched `/i/v0/e` request.
BATCH_HEADERS = {"content-type": "application/json", "content-encoding": "gzip"}
SINGLE_HEADERS = {"content-type": "text/plain"}


def pageview(i: int) -> dict[str, Any]:
    """A posthog-js `$pageview` with the ~40 properties the browser SDK sends (about 1.5 kB)."""
    user = f"user-{i % 100_000}"
    url = f"https://shop.example.com/products/item-{i}?utm_source=newsletter&utm_medium=email"
    return {
        "event": "$pageview",
        "distinct_id": user,
        "timestamp": "2026-11-22T10:00:00.000Z",
        "properties": {
            "$os": "Mac OS X",
            "$os_version": "14.5.0",
            "$browser": "Chrome",
            "$browser_version": 131,
            "$device_type": "Desktop",
            "$timezone": "Europe/Berlin",
            "$timezone_offset": -60,
            "$current_url": url,
            "$host": "shop.example.com",
            "$pathname": f"/products/item-{i}",
            "$raw_user_agent": (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/131.0.0.0 Safari/537.36"
            ),
            "$browser_language": "en-US",
            "$browser_language_prefix": "en",
            "$screen_height": 1117,
            "$screen_width": 1728,
            "$viewport_height": 988,
            "$viewport_width": 1728,
            "$lib": "web",
            "$lib_version": "1.418.10",
            "$insert_id": f"k2j3h4g5f6d7s8a9{i}",
            "$time": 1763805600.123,
            "distinct_id": user,
            "$device_id": "0193a8f0-1111-7abc-8def-123456789abc",
            "$user_id": user,
            "$session_id": "0193a8f0-2222-7abc-8def-123456789abc",
            "$window_id": "0193a8f0-3333-7abc-8def-123456789abc",
            "$pageview_id": "0193a8f0-4444-7abc-8def-123456789abc",
            "$is_identified": True,
            "$process_person_profile": True,
            "$referrer": "https://www.google.com/",
            "$referring_domain": "www.google.com",
            "utm_source": "newsletter",
            "utm_medium": "email",
            "utm_campaign": "black-friday",
            "title": "Item — Example Shop",
            "token": TOKEN,
            "$set": {"$current_url": url, "$browser": "Chrome"},
            "$set_once": {"$initial_referrer": "https://www.google.com/", "$initial_utm_source": "newsletter"},
            "$active_feature_flags": ["new-checkout", "pricing-v2"],
            "$feature/new-checkout": True,
        },
    }


def batch_body(events: int = 100) -> bytes:
    """A `/batch` body as posthog-node sends it, gzipped. No uuids: each request stores new rows."""
    body = {"api_key": TOKEN, "batch": [pageview(i) for i in range(events)], "sent_at": "2026-11-22T10:00:01.000Z"}
    return gzip.compress(json.dumps(body).encode())


def single_body() -> bytes:
    """One event to `/i/v0/e/` as posthog-js sends it unbatched: a gzipped one-element array."""
    return gzip.compress(json.dumps([pageview(7)]).encode())


def event_size() -> int:
    return len(json.dumps(pageview(7)))


# Persons: three `/batch` workloads of the same pageview that differ only in the person work they
# ask for. oha sends a request body it picks at random from a file of lines, so each workload is
# many distinct bodies, each one line: base64 of the gzipped JSON (`?compression=base64`).

PERSON_USERS = 100_000
PLANS = ("free", "starter", "pro", "team", "enterprise")
PERSON_WORKLOADS = ("capture-only", "set-heavy", "identify-heavy")
_encoder = msgspec.json.Encoder()


def user_id(n: int) -> str:
    """The n-th user: a stride coprime with 100,000 walks through every user once per 100,000 n."""
    return f"user-{n * 7919 % PERSON_USERS}"


def anonymous_id(slot: int) -> str:
    """A posthog-js anonymous id (a UUIDv7-shaped string), never the same for two slots."""
    return f"01938f00-0000-7000-8000-{slot:012x}"


def _as(event: dict[str, Any], distinct_id: str, *, identified: bool) -> dict[str, Any]:
    properties = event["properties"]
    event["distinct_id"] = properties["distinct_id"] = distinct_id
    properties["$is_identified"] = identified
    if identified:
        properties["$user_id"] = distinct_id
    else:
        properties.pop("$user_id", None)
        properties["$device_id"] = distinct_id
    return event


def _changing_set(slot: int) -> dict[str, Any]:
    """`$set` values that differ from one slot to the next, so the person really changes."""
    url = f"https://shop.example.com/products/item-{slot}"
    return {"$current_url": url, "$browser": "Chrome", "plan": PLANS[slot % len(PLANS)], "pageviews": slot}


def capture_only_event(slot: int) -> dict[str, Any]:
    """The pageview, personless: `$process_person_profile: false`, no `$set` nor `$set_once`."""
    event = _as(pageview(slot), user_id(slot), identified=True)
    properties = event["properties"]
    properties["$process_person_profile"] = False
    del properties["$set"], properties["$set_once"]
    return event


def set_heavy_event(slot: int) -> dict[str, Any]:
    """The pageview of one of 100,000 users, with `$set` values that change on every event."""
    event = _as(pageview(slot), user_id(slot), identified=True)
    event["properties"]["$set"] = _changing_set(slot)
    return event


def identify_heavy_event(slot: int) -> dict[str, Any]:
    """Groups of four events, half of them `$identify` with an anonymous id never seen before:

    0. an anonymous pageview (the anonymous id gets a person of its own);
    1. `$identify` of that anonymous id as one of the 100,000 users: a merge once the user exists;
    2. a pageview of that user, with `$set`;
    3. `$identify` of another user with a fresh anonymous id that has no events: a link.
    """
    identifies = slot // 2  # the n-th `$identify`: slots 1 and 3 of each group of four
    match slot % 4:
        case 0:
            return _as(pageview(slot), anonymous_id(slot), identified=False)
        case 1 | 3 as step:
            anonymous = anonymous_id(slot - 1 if step == 1 else slot)
            event = _as(pageview(slot), user_id(identifies), identified=True)
            event["event"] = "$identify"
            event["properties"]["$anon_distinct_id"] = anonymous
            event["properties"]["$set"] = {**_changing_set(slot), "email": f"{user_id(identifies)}@example.com"}
            return event
        case _:
            event = _as(pageview(slot), user_id(identifies - 1), identified=True)
            event["properties"]["$set"] = _changing_set(slot)
            return event


PERSON_EVENTS: dict[str, Callable[[int], dict[str, Any]]] = {
    "capture-only": capture_only_event,
    "set-heavy": set_heavy_event,
    "identify-heavy": identify_heavy_event,
}


def seed_bodies(events: int = 100) -> list[bytes]:
    """`/batch` bodies (gzipped) that create each of the 100,000 users with one small `$set`
    event, so that the workloads meet users who already exist, as a site with returning users does."""
    out = []
    for first in range(0, PERSON_USERS, events):
        batch = [
            {
                "event": "$set",
                "distinct_id": user_id(n),
                "timestamp": "2026-11-22T09:00:00.000Z",
                "properties": {"$set": {"plan": "free", "signed_up": True}, "$lib": "posthog-node"},
            }
            for n in range(first, first + events)
        ]
        raw = _encoder.encode({"api_key": TOKEN, "batch": batch, "sent_at": "2026-11-22T09:00:01.000Z"})
        out.append(gzip.compress(raw, mtime=0))
    return out


def person_bodies(workload: str, bodies: int, events: int = 100) -> list[bytes]:
    """``bodies`` distinct `/batch` bodies of ``events`` events each, as base64 lines. Body b holds
    slots b·events up to (b+1)·events - 1: 4,000 bodies of 100 reach each of the 100,000 users four
    times (set-heavy), or link 200,000 fresh anonymous ids to them (identify-heavy)."""
    make = PERSON_EVENTS[workload]
    out = []
    for body in range(bodies):
        batch = [make(slot) for slot in range(body * events, (body + 1) * events)]
        raw = _encoder.encode({"api_key": TOKEN, "batch": batch, "sent_at": "2026-11-22T10:00:01.000Z"})
        out.append(base64.b64encode(gzip.compress(raw, mtime=0)))
    return out
