"""What compressing outbox entries saves a commit, in process.

    .venv/bin/python -m benches.bench_outbox [--rounds 2] [--commits 20]

Two stores get the same requests: one with compression off (the default), which stores entries
as they are encoded; the other with it on (`HOGFLARE_OUTBOX_COMPRESSION=on`), having made its
dictionary from its first 2,000 entries, read as the lake's shipper reads them, as a server does. For each workload (the
ingestion benchmark's `/batch` pageviews of 100 users, and the persons benchmark's capture-only
and set-heavy events over 100,000 stored users) `--commits` commits of 10 requests of 100 events
are timed on each store in turn: wall time and CPU per event of `Store.commit` (synced), the
bytes the disk's block device was given to write per event (the machine's counter, so keep it
otherwise idle), and the stored entry's size.

The benchmark's events differ from one another only in a few counters, so its dictionary fits
them better than a real deployment's fits its own traffic: the entry sizes here are a lower bound.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import shutil
import tempfile
import time
from pathlib import Path

from benches.bench_dedupe import written_bytes
from benches.workloads import batch_body, person_bodies, seed_bodies
from hogflare._hogflare import Batch, Decoder, Store

REQUESTS = 10
WORKLOADS = ("batch", "capture-only", "set-heavy")
_decoder = Decoder(max_inflated_bytes=1 << 30, max_event_bytes=1 << 24)


def _decode(gzipped: bytes) -> Batch:
    return _decoder.decode("event", gzipped, content_encoding="gzip")


def bodies(workload: str, count: int) -> list[bytes]:
    """``count`` gzipped `/batch` bodies of 100 events."""
    if workload == "batch":
        # The ingestion benchmark sends one body over and over, each time as new events.
        return [batch_body()] * count
    return [gzip.compress(gzip.decompress(base64.b64decode(line))) for line in person_bodies(workload, count)]


def commit(store: Store, requests: list[Batch]) -> None:
    store.commit(requests, dedupe_window_days=7, max_outbox_bytes=1 << 40)


def delivered(store: Store) -> None:
    """Everything read as the lake's shipper reads it (the reads make the dictionary), then forgotten."""
    after = 0
    while True:
        chunk = store.pipeline(after, max_rows=5_000, max_bytes=64 << 20, max_body_bytes=1 << 20, lanes=1, persons=True)
        if chunk.positions == 0:
            break
        after = chunk.last_seq
    store.trim_outbox(after, limit=1 << 30)


def prepared(scratch: Path, workload: str, compressed: bool) -> Store:
    store = Store(Path(tempfile.mkdtemp(dir=scratch)), compress_outbox=compressed)
    if workload != "batch":
        for body in seed_bodies():
            commit(store, [_decode(body)])
        store.trim_outbox(store.outbox_state()[0], limit=1 << 30)
    warm = bodies(workload, 20)
    for first in range(0, len(warm), REQUESTS):
        commit(store, [_decode(body) for body in warm[first : first + REQUESTS]])
    if compressed:
        delivered(store)
        assert store.outbox_dictionary() == 1, "no dictionary made"
    else:
        store.trim_outbox(store.outbox_state()[0], limit=1 << 30)
    return store


def timed(store: Store, workload: str, commits: int) -> dict[str, float]:
    work = [[_decode(body) for body in bodies(workload, REQUESTS)] for _ in range(commits)]
    before_bytes = store.outbox_state()[2]
    wall, cpu, disk = time.perf_counter(), time.process_time(), written_bytes()
    for requests in work:
        commit(store, requests)
    events = commits * REQUESTS * 100
    result = {
        "wall_us": (time.perf_counter() - wall) / events * 1e6,
        "cpu_us": (time.process_time() - cpu) / events * 1e6,
        "disk_kb": (written_bytes() - disk) / events / 1000,
        "entry_b": (store.outbox_state()[2] - before_bytes) / events,
    }
    store.trim_outbox(store.outbox_state()[0], limit=1 << 30)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--commits", type=int, default=20)
    parser.add_argument("--scratch", type=Path, default=Path.cwd(), help="where the stores go (the disk measured)")
    args = parser.parse_args()
    print("| workload | round | entries | commit wall / event | CPU / event | disk writes / event | stored / event |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for workload in WORKLOADS:
        stores = {kind: prepared(args.scratch, workload, kind == "compressed") for kind in ("plain", "compressed")}
        try:
            for round_ in range(1, args.rounds + 1):
                order = ("plain", "compressed") if round_ % 2 else ("compressed", "plain")
                for kind in order:
                    run = timed(stores[kind], workload, args.commits)
                    print(
                        f"| {workload} | {round_} | {kind} | {run['wall_us']:.1f} µs | {run['cpu_us']:.1f} µs "
                        f"| {run['disk_kb']:.2f} kB | {run['entry_b']:,.0f} B |",
                        flush=True,
                    )
        finally:
            for store in stores.values():
                shutil.rmtree(store.path)


if __name__ == "__main__":
    main()
