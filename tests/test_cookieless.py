"""Cookieless mode: posthog-js with ``cookieless_mode`` keeps no id in the browser, and hogflare
names each visitor from a salted hash of the project, their address, the site and their browser,
as PostHog's server hash mode does, storing neither the address nor the raw user agent."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Hogflare, snapshot
from tests.helpers import flag_corpus
from tests.helpers.sdk import run_script
from tests.helpers.server import Server, query, serving_flags, wait_for_rows

TOKEN = "phc_cookieless"
UUID_TEXT = 36
#: One flag for the visitor's stored person, and ten halves: for the sentinel id itself, or for
#: another visitor, the halves would differ (by chance alike once in a thousand).
FLAGS = [
    flag_corpus.flag(500, "pro-only", [flag_corpus.cond(flag_corpus.person("plan", "exact", ["pro"]))]),
    *(flag_corpus.flag(501 + n, f"half-{n}", [flag_corpus.cond(rollout=50)]) for n in range(10)),
    flag_corpus.flag(
        520,
        "continuity",
        [flag_corpus.cond()],
        multivariate=flag_corpus.variants(("a", 25), ("b", 25), ("c", 25), ("d", 25)),
        ensure_experience_continuity=True,
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving_flags(tmp_path_factory.mktemp("cookieless") / "data", FLAGS) as running:
        yield running


def rows_of(server: Server, run_id: str, count: int) -> list[dict[str, Any]]:
    sql = (
        "select event, distinct_id, properties from events "
        f"where json_extract_string(properties, '/run_id') = '{run_id}' order by timestamp"
    )
    rows = wait_for_rows(server.data_dir, sql, count)
    assert len(rows) == count, rows
    return [{**row, "properties": json.loads(row["properties"])} for row in rows]


@pytest.mark.browser
def test_posthog_js_cookieless_visitors_are_named_by_the_server(server: Server) -> None:
    run_id, user = uuid.uuid4().hex, f"user-{uuid.uuid4().hex[:8]}"
    page = run_script("cookieless_browser.mjs", server.url, TOKEN, "cookieless", run_id, "--user-id", user)
    assert page["page_errors"] == []
    assert page["anonymous"] == ["$posthog_cookieless", "$posthog_cookieless"]
    assert page["identified"] == user

    first, second, identify, signed_in = rows_of(server, run_id, 4)
    assert [row["event"] for row in (first, second, identify, signed_in)] == [
        "viewed pricing",
        "viewed pricing",
        "$identify",
        "signed in",
    ]
    visitor = first["distinct_id"]
    assert visitor.startswith("cookieless_")
    # The same browser on the same site is the same visitor on its next page, in the same session.
    assert second["distinct_id"] == visitor
    for row in (first, second, identify, signed_in):
        props = row["properties"]
        assert props["$device_id"].startswith("cookielessd_")
        assert len(props["$session_id"]) == UUID_TEXT
        for kept_out in ("$ip", "$raw_user_agent"):
            assert kept_out not in props, (row["event"], kept_out)
        assert "$initial_raw_user_agent" not in props.get("$set_once", {})
    assert len({row["properties"]["$session_id"] for row in (first, second, signed_in)}) == 1
    assert identify["distinct_id"] == user
    assert identify["properties"]["$anon_distinct_id"] == visitor
    assert signed_in["distinct_id"] == user

    # identify joined the anonymous visitor to the user: one person for both ids.
    people = query(
        server.data_dir,
        f"select distinct_id, person_id from person_distinct_ids where distinct_id in ('{visitor}', '{user}')",
    )
    assert len(people) == 2, people
    assert people[0]["person_id"] == people[1]["person_id"], people
    assert query(server.data_dir, "select * from person_distinct_ids where distinct_id = '$posthog_cookieless'") == []

    # The second page's flags were the visitor's: their person's property, their own buckets.
    assert "pro-only" in page["flags"]
    assert page["flags"] == enabled_flags(server, visitor)
    assert page["flags"] != enabled_flags(server, "$posthog_cookieless")


def flags_of(server: Server, distinct_id: str, **extra: Any) -> dict[str, Any]:
    body = {"token": TOKEN, "distinct_id": distinct_id, **extra}
    answer: dict[str, Any] = httpx.post(f"{server.url}/flags/?v=2", json=body, timeout=10).json()["flags"]
    return answer


def enabled_flags(server: Server, distinct_id: str) -> list[str]:
    return sorted(key for key, flag in flags_of(server, distinct_id).items() if flag["enabled"])


def test_identifying_from_cookieless_mode_leaves_no_shared_hash_key(server: Server) -> None:
    """posthog-js names the sentinel as the anonymous id when a cookieless visitor identifies:
    remembered as a hash key, it would put every such user in one variant."""
    sentinel_variant = flags_of(server, "$posthog_cookieless")["continuity"]["variant"]
    users = (f"user-{uuid.uuid4().hex[:8]}" for _ in range(100))
    user = next(u for u in users if flags_of(server, u)["continuity"]["variant"] != sentinel_variant)
    own = flags_of(server, user)["continuity"]["variant"]
    signed_up = {"event": "signed up", "distinct_id": user, "properties": {"$set": {"plan": "free"}}}
    response = httpx.post(f"{server.url}/batch/", json={"api_key": TOKEN, "batch": [signed_up]}, timeout=10)
    assert response.status_code == 200
    assert flags_of(server, user, **{"$anon_distinct_id": "$posthog_cookieless"})["continuity"]["variant"] == own
    assert flags_of(server, user)["continuity"]["variant"] == own


def cookieless_event(run_id: str, user_agent: str) -> dict[str, Any]:
    return {
        "event": "$pageview",
        "distinct_id": "$posthog_cookieless",
        "properties": {
            "$cookieless_mode": True,
            "$raw_user_agent": user_agent,
            "$host": "www.example.com",
            "run_id": run_id,
        },
    }


def test_the_request_address_goes_into_the_hash_and_nowhere_else(server: Server) -> None:
    run_id = uuid.uuid4().hex
    events = [cookieless_event(run_id, "agent-a"), cookieless_event(run_id, "agent-a"), cookieless_event(run_id, "b")]
    response = httpx.post(f"{server.url}/batch/", json={"api_key": TOKEN, "batch": events}, timeout=10)
    assert response.status_code == 200
    a1, a2, b = rows_of(server, run_id, 3)
    assert a1["distinct_id"] == a2["distinct_id"] != b["distinct_id"]
    assert "$ip" not in a1["properties"]


def test_cookieless_events_are_refused_alone_when_turned_off(tmp_path: Path) -> None:
    with Server(tmp_path / "data", env={"HOGFLARE_COOKIELESS_MODE": "disabled"}) as server:
        run_id = uuid.uuid4().hex
        plain = {"event": "kept", "distinct_id": "someone", "properties": {"run_id": run_id}}
        batch = [cookieless_event(run_id, "agent"), plain]
        response = httpx.post(f"{server.url}/batch/", json={"api_key": TOKEN, "batch": batch}, timeout=10)
        assert response.status_code == 200
        assert [row["event"] for row in rows_of(server, run_id, 1)] == ["kept"]
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert 'hogflare_events_dropped_total{reason="cookieless_disabled"} 1.0' in metrics


async def test_a_cookieless_recording_keeps_neither_the_address_nor_the_user_agent(hogflare: Hogflare) -> None:
    """Replays are not hashed to the visitor (they keep the sentinel), but they are stored as
    carefully as the visitor's events."""
    recording = snapshot("$posthog_cookieless", **{"$cookieless_mode": True, "$raw_user_agent": "agent-a"})
    response = await hogflare.post("/s/", [recording])
    assert response.status_code == 200
    (row,) = hogflare.rows()
    assert row["event"] == "$snapshot_items"
    for kept_out in ("$ip", "$raw_user_agent"):
        assert kept_out not in row["properties"]
