"""Operational visibility: ``GET /metrics``, request ids, and log lines that stay few under floods.

Counters are process-wide, so each test reads them before and after its traffic and checks the
difference, as a user comparing two scrapes would."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from hogflare.config import Settings
from hogflare.logs import add_request_id, flush_summaries
from tests.conftest import TOKEN, Hogflare, event, make_settings, running
from tests.helpers.persons import identify
from tests.helpers.server import Server, wait_for_rows
from tests.helpers.stream import FakeStream

MAX_BODY = 64_000


class Scrape:
    """One ``/metrics`` answer, parsed; a sample that is not there reads as 0."""

    def __init__(self, text: str) -> None:
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.values[sample.name, tuple(sorted(sample.labels.items()))] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.values.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Scrape, after: Scrape) -> Callable[..., float]:
    return lambda name, **labels: after(name, **labels) - before(name, **labels)


async def scrape(hogflare: Hogflare) -> Scrape:
    response = await hogflare.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(response.text)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # A long summary interval: the tests flush the log summaries themselves when they want them.
    return make_settings(tmp_path / "data", max_body_bytes=MAX_BODY, log_summary_secs=60.0)


def batch(*items: dict[str, Any]) -> dict[str, Any]:
    return {"api_key": TOKEN, "batch": list(items)}


async def test_metrics_count_requests_events_and_what_waits_for_the_lake(hogflare: Hogflare) -> None:
    before = await scrape(hogflare)
    first = event(distinct_id="user-0", uuid=str(uuid.uuid4()))
    good = [first, *(event(distinct_id=f"user-{n}") for n in (1, 2))]
    assert (await hogflare.post("/batch/", batch(*good))).status_code == 200
    no_distinct_id = {"event": "no id", "properties": {}}
    assert (await hogflare.post("/batch", batch(event(distinct_id="user-3"), no_distinct_id))).status_code == 200
    assert (await hogflare.post("/i/v0/e/", {"api_key": TOKEN, **first})).status_code == 200  # a duplicate
    assert (await hogflare.post("/i/v0/e/", event())).status_code == 401  # no token
    # A request whose every event is dropped is refused, and its drops counted all the same.
    assert (await hogflare.post("/i/v0/e/", {"api_key": TOKEN, **no_distinct_id})).status_code == 400
    too_big = await hogflare.post("/batch/", b"[" + b" " * MAX_BODY + b"]", headers={"content-type": "text/plain"})
    assert too_big.status_code == 413
    assert (await hogflare.client.get("/wp-login.php")).status_code == 404
    after = await scrape(hogflare)
    change = delta(before, after)

    requests = "hogflare_http_requests_total"
    assert change(requests, route="/batch", status="200") == 2
    assert change(requests, route="/batch", status="413") == 1
    assert change(requests, route="/i/v0/e", status="200") == 1
    assert change(requests, route="/i/v0/e", status="401") == 1
    assert change(requests, route="/i/v0/e", status="400") == 1
    assert change(requests, route="other", status="404") == 1
    assert change(requests, route="/metrics", status="200") == 1  # the first scrape
    assert change("hogflare_http_request_duration_seconds_count", route="/batch") == 3
    assert change("hogflare_http_request_duration_seconds_sum", route="/batch") > 0
    assert change("hogflare_events_accepted_total") == 4
    assert change("hogflare_events_deduplicated_total") == 1
    assert change("hogflare_events_dropped_total", reason="missing_distinct_id") == 2
    # One commit per capture request that had events, each synced before its answer.
    assert change("hogflare_commit_duration_seconds_count") == 3
    assert change("hogflare_commit_fsync_seconds_count") == 3
    assert 0 < change("hogflare_commit_fsync_seconds_sum") <= change("hogflare_commit_duration_seconds_sum")

    # Four events, each with its person's snapshot, wait in the outbox for the lake.
    assert after("hogflare_outbox_rows") == 8
    assert after("hogflare_outbox_bytes") > 0
    assert after("hogflare_outbox_max_bytes") == hogflare.settings.outbox_max_bytes
    assert after("hogflare_sink_lag_rows", sink="lake") == 8
    assert after("hogflare_sink_lag_seconds", sink="lake") > 0
    assert (after("hogflare_persons"), after("hogflare_distinct_ids"), after("hogflare_groups")) == (4, 4, 0)

    assert len(hogflare.rows()) == 4  # ships everything to the lake
    shipped = await scrape(hogflare)
    assert delta(after, shipped)("hogflare_sink_rows_total", sink="lake") == 8
    assert delta(after, shipped)("hogflare_sink_batches_total", sink="lake") == 2  # events and persons tables
    assert shipped("hogflare_sink_lag_rows", sink="lake") == 0
    assert shipped("hogflare_sink_lag_seconds", sink="lake") == 0
    assert shipped("hogflare_outbox_rows") == 0


async def test_request_ids_are_kept_or_made_and_always_returned(hogflare: Hogflare) -> None:
    kept = await hogflare.client.get("/_health", headers={"x-request-id": "lb-7f3a:42"})
    assert kept.headers["x-request-id"] == "lb-7f3a:42"

    made = [(await hogflare.client.get("/_health")).headers["x-request-id"] for _ in range(2)]
    assert made[0] != made[1]
    assert all(re.fullmatch(r"[0-9a-f]{24,}", made_id) for made_id in made)

    # Characters that could forge log fields are removed, and the id is cut to 128 characters.
    hostile = 'id "with" spaces\\ {and} <tags>' + "x" * 300
    refused = await hogflare.post("/i/v0/e/", event(), headers={"x-request-id": hostile})
    assert refused.headers["x-request-id"] == ("idwithspacesandtags" + "x" * 300)[:128]
    # Error bodies are what SDKs already parse, with or without an id.
    plain = await hogflare.post("/i/v0/e/", event())
    assert refused.status_code == plain.status_code == 401
    assert refused.content == plain.content
    assert set(refused.json()) == {"status", "error"}

    for response in (
        await hogflare.client.get("/no/such/route"),
        await hogflare.client.options("/batch/", headers={"origin": "https://app.example"}),
        await hogflare.post("/batch/", batch(event())),
    ):
        assert response.headers["x-request-id"]


async def test_log_lines_about_a_request_carry_its_id(tmp_path: Path) -> None:
    # A full outbox refuses the second request and logs why.
    async with running(make_settings(tmp_path / "data", outbox_max_bytes=0)) as hogflare:
        assert (await hogflare.post("/batch/", batch(event()))).status_code == 200
        with structlog.testing.capture_logs(processors=[add_request_id]) as logs:
            refused = await hogflare.post("/batch/", batch(event()), headers={"x-request-id": "client-chosen-1"})
    assert refused.status_code == 503
    assert refused.headers["x-request-id"] == "client-chosen-1"
    assert [(line["event"], line["request_id"]) for line in logs] == [("request refused", "client-chosen-1")]


async def test_dropped_items_are_logged_once_per_reason_and_interval(hogflare: Hogflare) -> None:
    bad = [{"event": "no id", "properties": {}}] * 2 + [event(uuid="not-a-uuid")]
    before = await scrape(hogflare)
    with structlog.testing.capture_logs() as logs:
        ids = []
        for _ in range(20):
            response = await hogflare.post("/batch/", batch(event(), *bad))
            assert response.status_code == 200
            ids.append(response.headers["x-request-id"])
        written_at_once = [dict(line) for line in logs]
        flush_summaries()  # the interval is a minute long; shutdown writes what it counted like this
    change = delta(before, await scrape(hogflare))
    assert change("hogflare_events_dropped_total", reason="missing_distinct_id") == 40
    assert change("hogflare_events_dropped_total", reason="invalid_uuid") == 20
    assert change("hogflare_events_accepted_total") == 20

    # The first request with each reason is logged at once; the other 19 in one line at the end.
    dropped = [line for line in logs if line["event"] == "items dropped"]
    assert len(written_at_once) == 2
    by_reason = {
        reason: [(line["count"], line["requests"]) for line in dropped if line["reason"] == reason]
        for reason in ("missing_distinct_id", "invalid_uuid")
    }
    assert by_reason == {"missing_distinct_id": [(2, 1), (38, 19)], "invalid_uuid": [(1, 1), (19, 19)]}
    for line in dropped:
        assert line["example_token"] == TOKEN
        assert line["example_path"] == "/batch/"
        assert line["example_request_id"] == (ids[0] if line["requests"] == 1 else ids[1])
        assert line["log_level"] == "warning"


async def test_a_request_refused_503_counts_its_drops_only_when_sent_again_and_taken(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path / "data", outbox_max_bytes=1)) as hogflare:
        before = await scrape(hogflare)
        assert (await hogflare.post("/batch/", batch(event(), {"event": "no id"}))).status_code == 200
        for _ in range(3):  # an SDK's retries while the outbox is full
            assert (await hogflare.post("/batch/", batch(event(), {"event": "no id"}))).status_code == 503
        change = delta(before, await scrape(hogflare))
    assert change("hogflare_events_dropped_total", reason="missing_distinct_id") == 1


async def test_refused_person_updates_are_counted_and_summarised(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path / "data", log_summary_secs=1.0)) as hogflare:
        before = await scrape(hogflare)
        with structlog.testing.capture_logs() as logs:
            for n in range(4):
                assert (await hogflare.post("/batch/", batch(identify(f"user-{n}", "null")))).status_code == 200
            deadline = time.monotonic() + 10
            while sum(line["requests"] for line in logs) < 4 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # the summary's timer runs on the event loop
        change = delta(before, await scrape(hogflare))
    kind = "cannot_merge_with_illegal_distinct_id"
    assert change("hogflare_person_warnings_total", kind=kind) == 4
    assert [line["event"] for line in logs] == ["person updates refused"] * len(logs)
    assert {line["warning"] for line in logs} == {kind}
    assert logs[0]["requests"] == 1
    assert len(logs) < 4
    assert sum(line["count"] for line in logs) == sum(line["requests"] for line in logs) == 4


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def metrics_of(server: Server) -> Scrape:
    """A scrape on a new connection, so any of the server's workers may answer it."""
    response = httpx.get(f"{server.url}/metrics", headers={"connection": "close"}, timeout=10)
    assert response.status_code == 200
    return Scrape(response.text)


def wait_for_metrics(server: Server, done: Callable[[Scrape], bool], what: str, timeout: float = 30.0) -> Scrape:
    deadline = time.monotonic() + timeout
    while not done(scraped := metrics_of(server)):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {timeout:g}s")
        time.sleep(0.1)
    return scraped


@pytest.mark.server
def test_a_real_server_adds_up_its_workers_and_its_shipper(tmp_path: Path) -> None:
    requests = 30
    with FakeStream() as stream:
        env = {
            "CLOUDFLARE_PIPELINE_ENDPOINT": stream.url,
            "HOGFLARE_LOG_FORMAT": "json",
            "HOGFLARE_LOG_SUMMARY_SECS": "60",
        }
        server = Server(tmp_path / "data", workers=2, env=env).start()
        try:
            before = metrics_of(server)
            for n in range(requests):
                items = [event(distinct_id=f"user-{n}-{k}") for k in range(2)] + [{"event": "no id"}]
                response = httpx.post(
                    f"{server.url}/batch/",
                    json=batch(*items),
                    headers={"x-request-id": f"load-{n}", "connection": "close"},
                )
                assert response.status_code == 200
            events = 2 * requests
            wait_for_rows(server.data_dir, "select uuid from events", events)
            # A worker adds its request counts to the shared ones within a second.
            caught_up = wait_for_metrics(
                server,
                lambda m: (
                    m("hogflare_sink_lag_rows", sink="lake") == m("hogflare_sink_lag_rows", sink="pipelines") == 0
                    and delta(before, m)("hogflare_http_requests_total", route="/batch", status="200") == requests
                ),
                "both sinks caught up and every request counted",
            )
            # Whichever worker answers, the counts are those of the whole server.
            for scraped in [caught_up, *(metrics_of(server) for _ in range(4))]:
                change = delta(before, scraped)
                assert change("hogflare_http_requests_total", route="/batch", status="200") == requests
                assert change("hogflare_events_accepted_total") == events
                assert change("hogflare_events_dropped_total", reason="missing_distinct_id") == requests
                assert change("hogflare_commit_fsync_seconds_count") >= 1
                # Counted by the shipper, a process of its own: events and person snapshots to the
                # lake, events to the stream (no persons stream is configured).
                assert change("hogflare_sink_rows_total", sink="lake") == 2 * events
                assert change("hogflare_sink_rows_total", sink="pipelines") == stream.stats()["rows"] == events
                assert change("hogflare_sink_batches_total", sink="pipelines") == stream.stats()["posts"]
                assert scraped("hogflare_persons") == events
                assert scraped("hogflare_sink_parked", sink="pipelines") == 0

            # The stream goes down: its lag grows and its retries are counted while the lake keeps up.
            stream.configure(fail_rate=1.0, status=503)
            for n in range(3):
                assert httpx.post(f"{server.url}/batch/", json=batch(event(distinct_id=f"late-{n}"))).status_code == 200
            behind = wait_for_metrics(
                server,
                lambda m: (
                    m("hogflare_sink_retries_total", sink="pipelines") > 0
                    and m("hogflare_sink_lag_rows", sink="lake") == 0
                ),
                "a retried stream",
            )
            assert behind("hogflare_sink_lag_rows", sink="pipelines") == 6  # 3 events, 3 snapshots
            assert behind("hogflare_sink_lag_seconds", sink="pipelines") > 0
            assert behind("hogflare_outbox_rows") == 6
            stream.configure(fail_rate=0)
            wait_for_metrics(server, lambda m: m("hogflare_sink_lag_rows", sink="pipelines") == 0, "the stream again")
        finally:
            server.stop()

    # Each worker logged the first request with dropped items at once and the rest in one line on
    # shutdown, never a line per request; and the first line carries its request's id.
    dropped = [line for line in json_lines(server.log()) if line.get("event") == "items dropped"]
    assert sum(line["count"] for line in dropped) == requests
    assert 2 <= len(dropped) <= 4
    first = [line for line in dropped if line["requests"] == 1]
    assert first
    assert all(line["request_id"] == line["example_request_id"] for line in first)
    assert all(re.fullmatch(r"load-\d+", line["example_request_id"]) for line in dropped)


def test_json_logs_are_json_on_every_line_granians_too(tmp_path: Path) -> None:
    env = {"HOGFLARE_LOG_FORMAT": "json", "HOGFLARE_LOG_LEVEL": "info"}
    with Server(tmp_path / "data", workers=2, env=env) as server:
        assert httpx.post(f"{server.url}/batch/", json=batch(event())).status_code == 200
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert all(line.startswith("{") for line in lines), [line for line in lines if not line.startswith("{")][:3]
    parsed = [json.loads(line) for line in lines]
    assert any(line.get("logger") == "granian" and "worker" in line["event"] for line in parsed)
    assert any(line["event"].startswith("hogflare serving on") for line in parsed)


def test_a_second_server_on_the_same_data_directory_leaves_the_first_ones_counts(tmp_path: Path) -> None:
    with Server(tmp_path / "data") as first:
        for n in range(3):
            assert httpx.post(f"{first.url}/batch/", json=batch(event(distinct_id=f"user-{n}"))).status_code == 200
        counted = wait_for_metrics(first, lambda m: m("hogflare_events_accepted_total") == 3, "three events")
        with Server(tmp_path / "data") as second:
            assert metrics_of(second)("hogflare_events_accepted_total") == 0
            assert metrics_of(first)("hogflare_events_accepted_total") == counted("hogflare_events_accepted_total")


async def test_a_metrics_token_keeps_metrics_to_its_holders(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path / "data", metrics_token="s3cret")) as hogflare:
        assert (await hogflare.client.get("/metrics")).status_code == 401
        wrong = await hogflare.client.get("/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert "HOGFLARE_METRICS_TOKEN" in wrong.json()["error"]
        right = await hogflare.client.get("/metrics", headers={"authorization": "Bearer s3cret"})
        assert right.status_code == 200
        assert "hogflare_build_info" in right.text
        assert (await hogflare.client.get("/_health")).status_code == 200, "only /metrics is guarded"
