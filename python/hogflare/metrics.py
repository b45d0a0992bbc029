"""Prometheus metrics, served as text at ``GET /metrics``.

Counters and histograms are counted where things happen: requests and events in the workers,
commits on each worker's commit thread, deliveries in the shipper. ``hogflare serve`` points
prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) at a fresh
``<data_dir>/metrics/<pid>`` before the workers start, so a scrape answered by any worker adds up
every worker's and the shipper's counts, and counts from a worker that was replaced stay in the sums.
That variable must be set before this module is first imported: prometheus-client picks its
storage on import. Without it (one process, or the app in a test) each process counts alone.

What describes the state rather than counts events (the outbox, how far each sink is behind,
persons and groups) is read from the store when scraped: a handful of LMDB reads, no scan.
"""

from __future__ import annotations

import asyncio
import os
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Any

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from hogflare._hogflare import Store, __version__
from hogflare.config import Settings
from hogflare.http import Response
from hogflare.store import positions_after

_multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None

# `_created` series double every counter's output and are not kept across processes anyway.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
_registry = prometheus_client.CollectorRegistry()

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_requests = Counter(
    "hogflare_http_requests",
    "HTTP requests answered, by route (the path without its trailing slash; `other` for paths hogflare "
    "does not serve) and status (499: the request ended unanswered; a body cut short is a 400).",
    ["route", "status"],
    registry=_registry,
)
_request_seconds = Histogram(
    "hogflare_http_request_duration_seconds",
    "Time from a request's arrival to its response, including the wait for the durable commit.",
    ["route"],
    buckets=_LATENCY_BUCKETS,
    registry=_registry,
)
_accepted = Counter(
    "hogflare_events_accepted", "Events stored durably and acknowledged (duplicates not included).", registry=_registry
)
_deduplicated = Counter(
    "hogflare_events_deduplicated",
    "Events acknowledged but not stored again: their uuid was seen within the dedupe window.",
    registry=_registry,
)
_dropped = Counter(
    "hogflare_events_dropped", "Items of a request refused by the decoder, by reason.", ["reason"], registry=_registry
)
_filtered = Counter(
    "hogflare_events_filtered",
    "Items discarded on purpose, as PostHog does ($performance_event, identity and group events with person "
    "processing off).",
    registry=_registry,
)
_person_warnings = Counter(
    "hogflare_person_warnings",
    "Person and group updates that could not be done as asked (the events still landed), by kind.",
    ["kind"],
    registry=_registry,
)
_commit_seconds = Histogram(
    "hogflare_commit_duration_seconds",
    "Time of one group commit, from asking for the store's write lock until it is on disk and answered.",
    buckets=_LATENCY_BUCKETS,
    registry=_registry,
)
_sync_seconds = Histogram(
    "hogflare_commit_fsync_seconds",
    "Time a group commit spent writing its pages and syncing them to disk.",
    buckets=_LATENCY_BUCKETS,
    registry=_registry,
)
_commit_requests = Histogram(
    "hogflare_commit_requests",
    "Requests that shared one group commit.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    registry=_registry,
)
_sink_rows = Counter(
    "hogflare_sink_rows", "Rows (events and person snapshots) delivered, by sink.", ["sink"], registry=_registry
)
_sink_batches = Counter(
    "hogflare_sink_batches",
    "Deliveries: lake commits, or requests a Pipelines stream accepted, by sink.",
    ["sink"],
    registry=_registry,
)
_sink_retries = Counter(
    "hogflare_sink_retries", "Deliveries that failed and will be tried again, by sink.", ["sink"], registry=_registry
)
_sink_refused = Counter(
    "hogflare_sink_rows_refused",
    "Rows a sink's destination can never take (larger than any request it accepts), left out of it, by sink.",
    ["sink"],
    registry=_registry,
)
_sink_parked = Gauge(
    "hogflare_sink_parked",
    "1 while a sink is parked because its destination refused rows (a configuration error).",
    ["sink"],
    multiprocess_mode="mostrecent",
    registry=_registry,
)
_lake_files_rewritten = Counter(
    "hogflare_lake_files_rewritten",
    "Small data files the shipper's upkeep rewrote into larger ones, by table.",
    ["table"],
    registry=_registry,
)


class _Children:
    """Labelled children of one metric, resolved once per label value (label sets are bounded)."""

    __slots__ = ("_by_label", "_metric")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._by_label: dict[str, Any] = {}

    def __getitem__(self, label: str) -> Any:
        child = self._by_label.get(label)
        if child is None:
            child = self._by_label[label] = self._metric.labels(label)
        return child


_dropped_by_reason = _Children(_dropped)
_warnings_by_kind = _Children(_person_warnings)

#: How long counts of the request path may wait in a worker before the other processes see them.
FLUSH_SECS = 1.0


class _RequestTally:
    """What requests of one route and status added since the last flush, in plain numbers."""

    __slots__ = ("buckets", "count", "latency", "requests", "seconds")

    def __init__(self, route: str, status: int) -> None:
        self.requests = _requests.labels(route, str(status))
        self.latency = _request_seconds.labels(route)
        self.count = 0
        self.seconds = 0.0
        self.buckets = [0] * (len(_LATENCY_BUCKETS) + 1)

    def flush(self) -> None:
        self.requests.inc(self.count)
        # prometheus-client adds one observation at a time; its bucket and sum values take a sum
        # just as well (the same values `observe` writes, in the same order of bounds).
        for index, count in enumerate(self.buckets):
            if count:
                self.latency._buckets[index].inc(count)
                self.buckets[index] = 0
        self.latency._sum.inc(self.seconds)
        self.count = 0
        self.seconds = 0.0


class _Tallies:
    """Counts of the request path, added to prometheus-client's values once a second.

    With several processes each of those values lives in a memory-mapped file, and an update
    takes a lock and writes the file: a few of them per request would cost more than the rest of
    the metrics. Plain additions here cost a fraction of a microsecond; a scrape answered by this
    process flushes first, one answered by another sees them within ``FLUSH_SECS``.
    """

    def __init__(self) -> None:
        self.http: dict[tuple[str, int], _RequestTally] = {}
        self.accepted = 0
        self.deduplicated = 0
        self._timer: asyncio.TimerHandle | None = None

    def touched(self) -> None:
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._timer = loop.call_later(FLUSH_SECS, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for tally in self.http.values():
            if tally.count:
                tally.flush()
        if self.accepted:
            _accepted.inc(self.accepted)
            self.accepted = 0
        if self.deduplicated:
            _deduplicated.inc(self.deduplicated)
            self.deduplicated = 0


_tallies = _Tallies()


def observe_request(route: str, status: int, seconds: float) -> None:
    tally = _tallies.http.get((route, status))
    if tally is None:
        tally = _tallies.http[route, status] = _RequestTally(route, status)
    tally.count += 1
    tally.seconds += seconds
    tally.buckets[bisect_left(_LATENCY_BUCKETS, seconds)] += 1
    _tallies.touched()


def count_events(stored: int, duplicates: int) -> None:
    _tallies.accepted += stored
    _tallies.deduplicated += duplicates
    _tallies.touched()


def flush() -> None:
    """Add what this process counted on its request path to the shared values (on shutdown)."""
    _tallies.flush()


def count_dropped(reason: str, count: int) -> None:
    _dropped_by_reason[reason].inc(count)


def count_filtered(count: int) -> None:
    _filtered.inc(count)


def count_person_warning(kind: str, count: int) -> None:
    _warnings_by_kind[kind].inc(count)


def observe_commit(requests: int, seconds: float, sync_seconds: float) -> None:
    _commit_requests.observe(requests)
    _commit_seconds.observe(seconds)
    _sync_seconds.observe(sync_seconds)


class SinkCounters:
    """What one sink (``lake``, ``pipelines``) delivered; counted in the shipper."""

    def __init__(self, sink: str) -> None:
        self.rows = _sink_rows.labels(sink)
        self.batches = _sink_batches.labels(sink)
        self.retries = _sink_retries.labels(sink)
        self.refused = _sink_refused.labels(sink)
        self._parked = _sink_parked.labels(sink)

    def parked(self, parked: bool) -> None:
        self._parked.set(1 if parked else 0)


def count_rewritten(table: str, files: int) -> None:
    _lake_files_rewritten.labels(table).inc(files)


class _StoreState:
    """Gauges read from the store when scraped."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        _, rows, size = self.store.outbox_state()
        yield _gauge("hogflare_outbox_rows", "Rows waiting in the outbox for some sink.", rows)
        yield _gauge("hogflare_outbox_bytes", "Bytes of the rows waiting in the outbox, as stored.", size)
        yield _gauge(
            "hogflare_outbox_max_bytes",
            "The outbox's high-water mark (HOGFLARE_OUTBOX_MAX_BYTES, at most a quarter of the store's map): "
            "past it, capture answers 503 until sinks catch up.",
            self.settings.outbox_limit,
        )
        lag_rows = GaugeMetricFamily(
            "hogflare_sink_lag_rows", "Rows in the outbox a sink does not have yet, by sink.", labels=["sink"]
        )
        lag_seconds = GaugeMetricFamily(
            "hogflare_sink_lag_seconds",
            "Age of the oldest row a sink does not have yet (0 when it has them all), by sink.",
            labels=["sink"],
        )
        now = time.time()
        for sink in self.settings.enabled_sinks:
            position = self.store.cursor(sink) or 0
            since = self.store.pending_since(position)
            lag_rows.add_metric([sink], positions_after(self.store, position))
            lag_seconds.add_metric([sink], 0.0 if since is None else max(0.0, now - since))
        yield lag_rows
        yield lag_seconds
        persons, distinct_ids, groups = self.store.counts()
        yield _gauge("hogflare_persons", "Persons in the store, over every project.", persons)
        yield _gauge("hogflare_distinct_ids", "Distinct ids pointing at a person, over every project.", distinct_ids)
        yield _gauge("hogflare_groups", "Groups in the store, over every project.", groups)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class _Scrape:
    def __init__(self, *collectors: Any) -> None:
        self.collectors = collectors

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily("hogflare_build_info", "The running hogflare's version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        for collector in self.collectors:
            yield from collector.collect()


def render(store: Store | None, settings: Settings) -> Response:
    """The metrics in Prometheus' text format."""
    _tallies.flush()
    counted: Any = _registry
    if _multiprocess_dir:
        counted = MultiProcessCollector(None, _multiprocess_dir)  # type: ignore[no-untyped-call]
    state = [_StoreState(store, settings)] if store is not None else []
    body = generate_latest(_Scrape(counted, *state))
    return Response(200, body, [(b"content-type", CONTENT_TYPE_PLAIN_0_0_4.encode())])
