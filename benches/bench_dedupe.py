"""What deduplication costs a commit when the SDK's uuids are random, in process.

    .venv/bin/python -m benches.bench_dedupe [--seen 1000000] [--rounds 2]

posthog-js and posthog-node send time-ordered uuids (v7), posthog-python random ones (v4). Every
stored event records its uuid for `HOGFLARE_DEDUPE_WINDOW_DAYS`, so a store serving a busy
posthog-python backend holds millions of them. A store is filled with `--seen` uuids of one kind,
then 20 commits of 30 requests of 100 personless events (1 kB each, new uuids of the same kind)
are timed: wall time and CPU per event of `Store.commit` (synced), and what the disk's block
device was given to write per event (the machine's counter, so keep it otherwise idle). The two
kinds alternate for `--rounds` rounds.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from hogflare._hogflare import Batch, Decoder, Store

COMMITS, REQUESTS, EVENTS = 20, 30, 100


def uuid7() -> str:
    stamp = int(time.time() * 1000).to_bytes(6, "big")
    raw = bytearray(stamp + secrets.token_bytes(10))
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


KINDS: dict[str, Callable[[], str]] = {"v7": uuid7, "v4": lambda: str(uuid.uuid4())}


def written_bytes() -> int:
    """Bytes written by every block device so far (sectors of 512 bytes)."""
    total = 0
    for stat in Path("/sys/block").glob("*/stat"):
        if not stat.parent.name.startswith(("loop", "ram")):
            total += int(stat.read_text().split()[6]) * 512
    return total


def request(decoder: Decoder, new_uuid: Callable[[], str], events: int) -> Batch:
    batch = [
        {
            "event": "e",
            "distinct_id": f"user-{index % 100}",
            "uuid": new_uuid(),
            "properties": {"$process_person_profile": False, "text": "x" * 800},
        }
        for index in range(events)
    ]
    body = json.dumps({"api_key": "phc_bench", "batch": batch}).encode()
    return decoder.decode("event", body, content_type="application/json")


def one_run(kind: str, seen: int, scratch: Path) -> dict[str, float]:
    decoder = Decoder(max_inflated_bytes=1 << 30, max_event_bytes=1 << 24)
    new_uuid = KINDS[kind]
    path = Path(tempfile.mkdtemp(dir=scratch))
    try:
        store = Store(path)
        for _ in range(seen // 1000):
            store.commit([request(decoder, new_uuid, 1000)], dedupe_window_days=7, max_outbox_bytes=1 << 40)
            # Delivered: the outbox stays small, the uuids stay seen.
            store.trim_outbox(store.outbox_state()[0], limit=1 << 30)
        requests = [request(decoder, new_uuid, EVENTS) for _ in range(COMMITS * REQUESTS)]
        wall, cpu, disk = time.perf_counter(), time.process_time(), written_bytes()
        for index in range(COMMITS):
            chunk = requests[index * REQUESTS : (index + 1) * REQUESTS]
            store.commit(chunk, dedupe_window_days=7, max_outbox_bytes=1 << 40)
        events = COMMITS * REQUESTS * EVENTS
        return {
            "wall_us": (time.perf_counter() - wall) / events * 1e6,
            "cpu_us": (time.process_time() - cpu) / events * 1e6,
            "disk_kb": (written_bytes() - disk) / events / 1000,
        }
    finally:
        shutil.rmtree(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seen", type=int, default=1_000_000, help="uuids already stored in the window")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--scratch", type=Path, default=Path.cwd(), help="where the stores go (the disk measured)")
    args = parser.parse_args()
    print("| round | uuids | commit wall / event | CPU / event | written to disk / event |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for round_ in range(1, args.rounds + 1):
        for kind in ("v7", "v4") if round_ % 2 else ("v4", "v7"):
            run = one_run(kind, args.seen, args.scratch)
            print(
                f"| {round_} | {kind} | {run['wall_us']:.1f} µs | {run['cpu_us']:.1f} µs | {run['disk_kb']:.2f} kB |",
                flush=True,
            )


if __name__ == "__main__":
    main()
