"""Request bodies for the benchmarks: realistic posthog-js events of about 1.5 kB."""

from __future__ import annotations

import gzip
import json
from typing import Any

TOKEN = "phc_bench_token"


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
