"""The real SDKs are the judges: posthog-python, posthog-node and posthog-js (in Chromium) send to
a real server, and the rows are read back from the lake with ``hogflare query``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import posthog
import pytest

from tests.helpers.sdk import run_script
from tests.helpers.server import Server, answered, wait_for_rows

pytestmark = [pytest.mark.server, pytest.mark.sdk]

JS = Path(__file__).parent / "js"
TOKEN = "phc_sdk_token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("sdk") / "data") as running:
        yield running


def node(script: str, server: Server, scenario: str, run_id: str) -> dict[str, Any]:
    return run_script(script, server.url, TOKEN, scenario, run_id)


def test_posthog_python_capture_and_flush(server: Server) -> None:
    run_id = uuid.uuid4().hex
    client = posthog.Posthog(TOKEN, host=server.url, flush_at=100, flush_interval=60)
    try:
        for i in range(25):
            client.capture("python event", distinct_id=f"py-{run_id}-{i % 3}", properties={"run_id": run_id, "i": i})
        client.capture("python with time", distinct_id=f"py-{run_id}-0", properties={"run_id": run_id}, timestamp=None)
        client.flush()
    finally:
        client.shutdown()
    sql = f"select * from events where json_extract_string(properties, '$.run_id') = '{run_id}'"
    rows = wait_for_rows(server.data_dir, sql, 26)
    assert len(rows) == 26
    props = [json.loads(row["properties"]) for row in rows]
    assert {p["$lib"] for p in props} == {"posthog-python"}
    assert sorted(p["i"] for p in props if "i" in p) == list(range(25))
    assert {row["api_key"] for row in rows} == {TOKEN}
    assert all(row["uuid"] and row["timestamp"] for row in rows)


def test_posthog_python_gzip(server: Server) -> None:
    run_id = uuid.uuid4().hex
    client = posthog.Posthog(TOKEN, host=server.url, gzip=True)
    client.capture("gzipped", distinct_id="py-gzip", properties={"run_id": run_id})
    client.shutdown()
    rows = wait_for_rows(server.data_dir, f"select * from events where properties like '%{run_id}%'", 1)
    assert [row["event"] for row in rows] == ["gzipped"]


def test_posthog_python_ai_lane(server: Server) -> None:
    run_id = uuid.uuid4().hex
    before = answered(server, "/i/v0/ai/batch")
    client = posthog.Posthog(TOKEN, host=server.url)
    try:
        client.capture_ai(
            "$ai_generation",
            distinct_id=f"ai-{run_id}",
            properties={"run_id": run_id, "$ai_model": "gpt-test", "$ai_input_tokens": 12},
        )
        client.flush()
    finally:
        client.shutdown()
    rows = wait_for_rows(server.data_dir, f"select * from events where distinct_id = 'ai-{run_id}'", 1)
    assert [row["event"] for row in rows] == ["$ai_generation"]
    assert json.loads(rows[0]["properties"])["$ai_model"] == "gpt-test"
    assert answered(server, "/i/v0/ai/batch") > before


def test_posthog_node_capture_and_shutdown(server: Server) -> None:
    run_id = uuid.uuid4().hex
    sent = node("node_sdk.mjs", server, "capture", run_id)
    assert sent["errors"] == []
    sql = f"select * from events where json_extract_string(properties, '$.run_id') = '{run_id}' order by timestamp"
    rows = wait_for_rows(server.data_dir, sql, sent["expected"])
    assert len(rows) == sent["expected"]
    assert {row["distinct_id"] for row in rows} == set(sent["distinct_ids"])
    assert {json.loads(row["properties"])["$lib"] for row in rows} == {"posthog-node"}
    dated = [row for row in rows if row["event"] == "node event with time"]
    assert dated[0]["timestamp"].startswith("2024-05-01T12:00:00")


def test_an_emoji_cut_in_half_loses_nothing(server: Server) -> None:
    """A lone surrogate (half an emoji) stands in as U+FFFD, as on PostHog; its batch lands whole."""
    run_id = uuid.uuid4().hex
    sent = node("node_sdk.mjs", server, "cut_emoji", run_id)
    assert sent["errors"] == []
    client = posthog.Posthog(TOKEN, host=server.url)
    try:
        client.capture("python cut", distinct_id=f"py-cut-{run_id}", properties={"run_id": run_id, "s": "ab\ud83d"})
        client.flush()
    finally:
        client.shutdown()
    sql = f"select * from events where json_extract_string(properties, '$.run_id') = '{run_id}'"
    rows = {row["event"]: json.loads(row["properties"]) for row in wait_for_rows(server.data_dir, sql, 4)}
    assert sorted(rows) == ["after", "before", "cut", "python cut"]
    assert rows["cut"]["title"] == "smile \ufffd"
    assert rows["after"]["whole"] == "😀"
    assert rows["python cut"]["s"] == "ab\ufffd"


@pytest.mark.browser
@pytest.mark.parametrize("scenario", ["basic", "instant"])
def test_posthog_js_in_chromium(server: Server, scenario: str) -> None:
    run_id = uuid.uuid4().hex
    page = node("browser.mjs", server, scenario, run_id)
    assert page["page_errors"] == []
    sql = f"select * from events where distinct_id = '{page['distinct_id']}' order by timestamp"
    expected = {"basic": {"$pageview", "custom event", "before unload"}, "instant": {"$pageview", "custom event"}}[
        scenario
    ]
    rows = wait_for_rows(server.data_dir, sql, len(expected))
    events = {row["event"] for row in rows}
    assert expected <= events, events
    custom = next(json.loads(row["properties"]) for row in rows if row["event"] == "custom event")
    assert custom["run_id"] == run_id
    assert custom["$lib"] == "web"
    assert custom["$current_url"].startswith("http://127.0.0.1:")
    if scenario == "basic":
        assert (custom["color"], custom["size"], custom["nested"]) == ("blue", 3, {"ok": True})


@pytest.mark.browser
def test_posthog_js_public_lists_are_empty_not_errors(server: Server) -> None:
    page = node("browser.mjs", server, "public_lists", uuid.uuid4().hex)
    assert page["page_errors"] == []
    assert page["early_access_features"] == []
    assert page["surveys"] == {"surveys": [], "context": {"isLoaded": True}}
    # posthog-js logs to the console when one of these requests fails.
    assert not [line for line in page["console_errors"] if "PostHog" in line], page["console_errors"]
