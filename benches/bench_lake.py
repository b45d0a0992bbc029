"""The shipper's two costs, in process: exporting outbox rows to Parquet, and committing files to
the lake's Iceberg tables as their history grows.

    .venv/bin/python -m benches.bench_lake [--commits 500]

- *export*: CPU per outbox row of `Store.export` (one chunk of 50,000 rows to zstd Parquet), for
  the ingestion pageview with every event distinct (as real traffic) and with one 100-event body
  repeated (as the end-to-end batch workload sends it), median of 8 runs.
- *commits*: the shipper ships 200 rows at a time, one commit per table each, `--commits` times;
  CPU per commit pair in windows of 50, as a ratio to the first window. A table that kept its
  whole history would cost more with every commit; a flat ratio means the history is bounded.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import tempfile
import time
from pathlib import Path

from benches.workloads import TOKEN, batch_body, pageview
from hogflare._hogflare import Decoder, Store
from hogflare.commit import open_store
from hogflare.config import Settings
from hogflare.lake import EVENTS, PERSONS
from hogflare.shipper import Shipper

WINDOW = 50


def distinct_body(first: int) -> bytes:
    batch = [pageview(first + offset) for offset in range(100)]
    return gzip.compress(json.dumps({"api_key": TOKEN, "batch": batch, "sent_at": "2026-11-22T10:00:01Z"}).encode())


def fill(store: Store, bodies: int, distinct: bool) -> None:
    decoder = Decoder(max_inflated_bytes=100 << 20, max_event_bytes=1 << 20)
    same = batch_body()
    for first in range(0, bodies, 10):
        batches = [
            decoder.decode(
                "event",
                distinct_body((first + index) * 100) if distinct else same,
                query=b"",
                content_type="application/json",
                content_encoding="gzip",
            )
            for index in range(10)
        ]
        store.commit(batches, dedupe_window_days=7, max_outbox_bytes=1 << 40)


def export_cost(distinct: bool) -> float:
    """Median CPU microseconds per row of exporting 50,000 outbox rows (25,000 events)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Settings.from_env({}, data_dir=tmp))
        fill(store, 250, distinct)
        costs = []
        for run in range(8):
            out = Path(tmp) / f"out{run}"
            started = time.process_time()
            export = store.export(
                0,
                events_upto=0,
                persons_upto=0,
                max_rows=50_000,
                max_bytes=1 << 30,
                events_dir=str(out / "events"),
                persons_dir=str(out / "persons"),
            )
            costs.append((time.process_time() - started) / export.positions * 1e6)
        return statistics.median(costs)


def commit_costs(commits: int) -> list[float]:
    """CPU milliseconds per commit pair (events and persons), averaged per window of commits."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env({}, data_dir=tmp, flush_rows=200)
        store = open_store(settings)
        fill(store, commits, distinct=True)  # 100 events, 200 rows, per commit pair
        shipper = Shipper(settings, store)
        windows: list[float] = []
        for _ in range(commits // WINDOW):
            started = time.process_time()
            for _ in range(WINDOW):
                shipper.ship_once()
            windows.append((time.process_time() - started) / WINDOW * 1e3)
        assert shipper.lake is not None
        for table in (EVENTS, PERSONS):
            print(f"{table}: {len(shipper.lake.refresh(table).metadata.snapshots)} snapshots kept")
        return windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", type=int, default=500)
    args = parser.parse_args()
    for distinct in (True, False):
        label = "distinct events" if distinct else "one body repeated"
        print(f"export, {label}: {export_cost(distinct):.2f} µs CPU per row")
    windows = commit_costs(args.commits)
    for index, cost in enumerate(windows):
        span = f"{index * WINDOW + 1}-{(index + 1) * WINDOW}"
        print(f"commits {span}: {cost:.1f} ms CPU per pair, x{cost / windows[0]:.2f}")


if __name__ == "__main__":
    main()
