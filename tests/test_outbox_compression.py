"""The outbox's compression (``HOGFLARE_OUTBOX_COMPRESSION=on``), as a user would notice it: after
the first entries the sinks read, new entries are stored compressed, and every row still lands in
the lake as it was sent, also when the process that compressed them is gone before they are
shipped and the next one runs with compression off."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from tests.conftest import TOKEN, make_settings, running


def pageview(n: int) -> dict[str, Any]:
    """A browser pageview of one of 50 users, with the person properties it sets."""
    url = f"https://shop.example.com/products/{n}?utm_source=newsletter"
    return {
        "event": "$pageview",
        "distinct_id": f"user-{n % 50}",
        "uuid": f"0193a8f0-0000-7000-8000-{n:012x}",
        "timestamp": "2026-11-22T10:00:00.000Z",
        "properties": {
            "$current_url": url,
            "$pathname": f"/products/{n}",
            "$browser": "Chrome",
            "$browser_version": 131,
            "$os": "Mac OS X",
            "$lib": "web",
            "$session_id": f"0193a8f0-2222-7abc-8def-{n % 7:012x}",
            "title": f"Item {n}",
            "$set": {"last_product": n, "plan": ("free", "pro")[n % 2]},
            "$set_once": {"first_product": n},
        },
    }


async def _send(hogflare: Any, numbers: range) -> None:
    for first in range(numbers.start, numbers.stop, 400):
        batch = [pageview(n) for n in range(first, min(first + 400, numbers.stop))]
        response = await hogflare.post("/batch/", {"api_key": TOKEN, "batch": batch})
        assert response.status_code == 200, response.text


async def test_compressed_rows_land_as_sent_also_after_a_restart(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", outbox_compression="on")
    async with running(settings) as hogflare:
        store = hogflare.app.store
        assert store is not None
        await _send(hogflare, range(1_600))
        assert store.outbox_dictionary() is None
        assert len(hogflare.rows()) == 1_600  # the lake's reads are the dictionary's samples
        assert store.outbox_dictionary() == 1
        _, rows_before, _ = store.outbox_state()
        assert rows_before == 0

        await _send(hogflare, range(1_600, 2_100))
        _, waiting_rows, waiting_bytes = store.outbox_state()
        # Each event's entry holds its row and its person's snapshot: about 1.2 kB uncompressed.
        assert waiting_rows == 1_000
        assert waiting_bytes < 500 * 400, waiting_bytes
    del hogflare, store
    gc.collect()  # the app's store is closed before the next one opens, as across processes

    # A new process, with compression off, whose sinks have never read an entry, ships what the
    # last one compressed, and stores its own entries as they are.
    async with running(make_settings(tmp_path / "data", outbox_compression="off")) as hogflare:
        store = hogflare.app.store
        assert store is not None
        await _send(hogflare, range(2_100, 2_200))
        _, waiting_rows, waiting_bytes_after = store.outbox_state()
        assert waiting_rows == 1_200
        assert waiting_bytes_after - waiting_bytes > 100 * 800, "stored as they are"
        rows = hogflare.rows(order="uuid")
        persons = hogflare.persons_latest()
        assert store.outbox_dictionary() == 1

    assert [row["properties"]["$current_url"] for row in rows] == [
        pageview(n)["properties"]["$current_url"] for n in range(2_200)
    ]
    assert [row["distinct_id"] for row in rows] == [f"user-{n % 50}" for n in range(2_200)]
    last = rows[-1]
    assert last["person_properties"]["last_product"] == 2_199
    assert last["person_properties"]["first_product"] == 2_199 % 50
    assert len(persons) == 50
    assert {person["properties"]["last_product"] for person in persons} == set(range(2_150, 2_200))
