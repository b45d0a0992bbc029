"""The shipper's two costs, in process: exporting outbox rows to Parquet, and committing files to
the lake's Iceberg tables as their history grows.

    .venv/bin/python -m benches.bench_lake [--commits 500]

- *export*: CPU and wall time per outbox row of `Store.export` (one chunk of 50,000 rows to zstd
  Parquet), by one writer and by one per core (at least two), for the ingestion pageview with
  every event distinct (as real traffic) and with one 100-event body repeated (as the end-to-end
  batch workload sends it), median of 8 alternating runs.
- *commits*: the shipper ships 200 rows at a time, one commit per table each, `--commits` times;
  CPU per commit pair in windows of 50, as a ratio to the first window. A table that kept its
  whole history would cost more with every commit; a flat ratio means the history is bounded.
  Each commit adds a file per table, and a commit's manifest work grows with the live files, so
  the same again with the upkeep's compaction (`HOGFLARE_COMPACT_FILES` at its default) every
  250 commits, its own CPU shown apart.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from benches.workloads import TOKEN, batch_body, pageview
from hogflare._hogflare import Decoder, Store
from hogflare.compaction import compact_due
from hogflare.config import Settings
from hogflare.lake_tables import EVENTS, PERSONS
from hogflare.shipper import Shipper
from hogflare.store import open_store

WINDOW = 50
#: Commits between two runs of the upkeep's compaction: the shipper's upkeep runs every five
#: minutes, a few hundred flushes apart under load.
COMPACT_EVERY = 250


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


def export_costs(distinct: bool, writers: int) -> dict[int, tuple[float, float]]:
    """Median (CPU, wall) microseconds per row of exporting 50,000 outbox rows (25,000 events),
    by one writer and by ``writers``, in alternating runs on the same store."""
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Settings.from_env({}, data_dir=tmp))
        fill(store, 250, distinct)
        costs: dict[int, list[tuple[float, float]]] = {1: [], writers: []}
        for run in range(8):
            for count, runs in costs.items():
                out = Path(tmp) / f"out{run}-{count}"
                cpu, wall = time.process_time(), time.perf_counter()
                export = store.export(
                    0,
                    events_upto=0,
                    persons_upto=0,
                    max_rows=50_000,
                    max_bytes=1 << 30,
                    events_dir=str(out / "events"),
                    persons_dir=str(out / "persons"),
                    writers=count,
                )
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                runs.append((cpu / export.positions * 1e6, wall / export.positions * 1e6))
        return {
            count: (statistics.median(c for c, _ in runs), statistics.median(w for _, w in runs))
            for count, runs in costs.items()
        }


def commit_costs(commits: int, compact_files: int = 0, compact_every: int = COMPACT_EVERY) -> tuple[list[float], float]:
    """CPU milliseconds per commit pair (events and persons), averaged per window of commits;
    with ``compact_files``, the upkeep's compaction runs every ``compact_every`` commits, and its
    CPU per commit pair comes second."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env({}, data_dir=tmp, flush_rows=200, compact_files=compact_files)
        store = open_store(settings)
        fill(store, commits, distinct=True)  # 100 events, 200 rows, per commit pair
        shipper = Shipper(settings, store)
        lake = shipper.lake
        assert lake is not None
        windows: list[float] = []
        compacting = 0.0
        for window in range(commits // WINDOW):
            started = time.process_time()
            for _ in range(WINDOW):
                shipper.ship_once()
            windows.append((time.process_time() - started) / WINDOW * 1e3)
            if compact_files and (window + 1) * WINDOW % compact_every == 0:
                started = time.process_time()
                for table in (EVENTS, PERSONS):
                    compact_due(lake, table, compact_files, deadline=time.monotonic() + 3600)
                    lake.trim_history(table)
                compacting += time.process_time() - started
        for table in (EVENTS, PERSONS):
            kept = len(lake.refresh(table).metadata.snapshots)
            files = len(lake.data_files(table))
            label = "compacted" if compact_files else "as flushed"
            print(f"{label}, {table}: {files} live files, {kept} snapshots kept")
        return windows, compacting / commits * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", type=int, default=500)
    args = parser.parse_args()
    writers = max(2, min(4, os.cpu_count() or 1))
    for distinct in (True, False):
        label = "distinct events" if distinct else "one body repeated"
        costs = export_costs(distinct, writers)
        for count, (cpu, wall) in costs.items():
            print(f"export, {label}, {count} writer(s): {cpu:.2f} µs CPU, {wall:.2f} µs wall per row")
        print(f"export, {label}: wall time with {writers} writers x{costs[writers][1] / costs[1][1]:.2f} of one")
    plain, _ = commit_costs(args.commits)
    compacted, compacting = commit_costs(args.commits, compact_files=Settings.from_env({}).compact_files)
    for index, (cost, with_upkeep) in enumerate(zip(plain, compacted, strict=True)):
        span = f"{index * WINDOW + 1}-{(index + 1) * WINDOW}"
        print(
            f"commits {span}: {cost:.1f} ms CPU per pair, x{cost / plain[0]:.2f}; "
            f"compacted: {with_upkeep:.1f} ms, x{with_upkeep / compacted[0]:.2f}"
        )
    print(f"compaction: {compacting:.1f} ms CPU per commit pair, every {COMPACT_EVERY} commits")


if __name__ == "__main__":
    main()
