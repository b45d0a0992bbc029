"""Experience continuity as PostHog keeps it: a flag with ``ensure_experience_continuity`` keeps
bucketing a user by the anonymous id they had when they identified, after posthog-js has stopped
sending that id, on later pages and through a merge of their persons."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import posthog
import pytest

from tests.helpers import flag_corpus
from tests.helpers.sdk import run_script
from tests.helpers.server import Server, serving_flags

TOKEN = "phc_continuity"
VARIANTS = flag_corpus.variants(("red", 34), ("green", 33), ("blue", 33))
FLAGS = [
    flag_corpus.flag(401, "exp", [flag_corpus.cond()], multivariate=VARIANTS, ensure_experience_continuity=True),
    flag_corpus.flag(402, "plain", [flag_corpus.cond()], multivariate=VARIANTS),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving_flags(tmp_path_factory.mktemp("continuity") / "data", FLAGS) as running:
        yield running


def variants(server: Server, distinct_id: str, anon: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"token": TOKEN, "distinct_id": distinct_id}
    if anon is not None:
        body["$anon_distinct_id"] = anon
    response = httpx.post(f"{server.url}/flags/?v=2", json=body, timeout=10)
    response.raise_for_status()
    answer = response.json()
    assert answer["errorsWhileComputingFlags"] is False
    return {key: flag["variant"] for key, flag in answer["flags"].items()}


def person_of(server: Server, *events: tuple[str, str, dict[str, Any]]) -> None:
    """Send events with posthog-python; each ``(event, distinct_id, properties)`` makes its person."""
    client = posthog.Posthog(TOKEN, host=server.url, sync_mode=True)
    try:
        for event, distinct_id, properties in events:
            client.capture(event, distinct_id=distinct_id, properties=properties)
    finally:
        client.shutdown()


def anonymous_id_unlike(server: Server, user: str) -> str:
    """A fresh anonymous id whose variant of both flags differs from the user's own."""
    own = variants(server, user)
    for n in range(200):
        anon = f"anon-{uuid.uuid4().hex[:8]}-{n}"
        theirs = variants(server, anon)
        if all(theirs[key] != own[key] for key in ("exp", "plain")):
            return anon
    raise AssertionError("no anonymous id with other variants in 200 tries")


@pytest.mark.browser
def test_a_returning_user_keeps_in_posthog_js_the_variant_seen_before_logging_in(server: Server) -> None:
    user = f"returning-{uuid.uuid4().hex[:8]}"
    person_of(server, ("signed up", user, {"$set": {"email": f"{user}@example.com"}}))
    anon = anonymous_id_unlike(server, user)
    seen, own = variants(server, anon), variants(server, user)

    page = run_script(
        "flags_continuity_browser.mjs", server.url, TOKEN, "continuity", user, "--anon-id", anon, "--user-id", user
    )
    assert page["page_errors"] == []
    assert page["before"] == {"distinct_id": anon, "exp": seen["exp"], "plain": seen["plain"]}
    # After identify, and on the next page where posthog-js no longer names the anonymous id, the
    # continuity flag keeps the anonymous variant; the same flag without continuity follows the user.
    assert page["after"] == {"distinct_id": user, "exp": seen["exp"], "plain": own["plain"]}
    assert page["reloaded"] == {"distinct_id": user, "exp": seen["exp"], "plain": own["plain"]}
    assert page["flags_requests"] >= 3
    # Any client asking for the user from now on gets the same answer.
    assert variants(server, user) == {"exp": seen["exp"], "plain": own["plain"]}


@pytest.mark.parametrize("flags_first", [True, False], ids=["flags-before-identify", "identify-before-flags"])
def test_identify_and_its_flags_reload_keep_the_anonymous_variant_in_either_order(
    server: Server, flags_first: bool
) -> None:
    """With person profiles for anonymous visitors, the flags reload of identify and the
    ``$identify`` event that merges the two persons race; either order ends the same."""
    user = f"user-{uuid.uuid4().hex[:8]}"
    person_of(server, ("signed up", user, {"$set": {"plan": "pro"}}))
    anon = anonymous_id_unlike(server, user)
    seen = variants(server, anon)
    person_of(server, ("$pageview", anon, {}))
    identify = ("$identify", user, {"$anon_distinct_id": anon})
    if flags_first:
        assert variants(server, user, anon)["exp"] == seen["exp"]
        person_of(server, identify)
    else:
        person_of(server, identify)
        assert variants(server, user, anon)["exp"] == seen["exp"]
    assert variants(server, user)["exp"] == seen["exp"]
    assert variants(server, anon)["exp"] == seen["exp"]


def test_a_merge_carries_the_hash_key_of_the_person_merged_away(server: Server) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    person_of(server, ("signed up", user, {}))
    device = anonymous_id_unlike(server, user)
    anon = f"anon-{uuid.uuid4().hex[:8]}"
    person_of(server, ("$pageview", anon, {}))
    # Only the anonymous person holds a hash key (the device id's), the user's none.
    variants(server, anon, device)
    person_of(server, ("$identify", user, {"$anon_distinct_id": anon}))
    assert variants(server, user)["exp"] == variants(server, device)["exp"]


def test_the_first_anonymous_id_stays_and_flags_without_continuity_ignore_it(server: Server) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    person_of(server, ("signed up", user, {}))
    first = anonymous_id_unlike(server, user)
    second = next(
        anon
        for anon in (anonymous_id_unlike(server, user) for _ in range(50))
        if variants(server, anon)["exp"] != variants(server, first)["exp"]
    )
    own = variants(server, user)
    assert variants(server, user, first) == {"exp": variants(server, first)["exp"], "plain": own["plain"]}
    assert variants(server, user, second)["exp"] == variants(server, first)["exp"]


def test_without_a_person_the_anonymous_id_counts_for_its_request_only(server: Server) -> None:
    """As on PostHog: a hash key is kept for persons that exist; a user identifying for the first
    time, whose person is not made yet, is bucketed by the anonymous id in that one answer."""
    user = f"new-{uuid.uuid4().hex[:8]}"
    anon = anonymous_id_unlike(server, user)
    assert variants(server, user, anon)["exp"] == variants(server, anon)["exp"]
    assert variants(server, user)["exp"] != variants(server, anon)["exp"]
