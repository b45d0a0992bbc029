"""Configurations of `hogflare serve` compared at the same moments of a noisy machine.

    .venv/bin/python -m benches.bench_paired --env HOGFLARE_EXPORT_WRITERS=1,2 --workload single

A shared machine's speed moves by half within minutes, so two runs of ten seconds taken one after
the other differ by more than most changes do. Here every configuration's server is started side
by side (idle ones cost nothing), then each cycle sends one short burst of the workload to each
server in turn, the order reversed every other cycle. For each configuration the figure is the
median, over cycles, of its rate divided by the first configuration's rate in the same cycle.

Two identical configurations (`--env HOGFLARE_LOG_LEVEL=warning,warning`) show the method's own
spread. Between bursts a server's shipper may still be shipping the rows of its last burst, at a
lower priority than the workers; `flags` and `health` leave it nothing to ship, and after each
`batch` burst the server is left to go idle (its rows shipped) before the next burst begins.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from benches import loadgen
from benches.bench_flags import bodies, flag_document, seed_persons, wait_until_shipped
from benches.harness import Server, hogflare, wait_settled
from benches.workloads import BATCH_HEADERS, SINGLE_HEADERS, batch_body, single_body

RESULTS = Path(__file__).parent / "results"
JSON_HEADERS = {"content-type": "application/json"}


@dataclass(frozen=True)
class Burst:
    path: str
    body: bytes | list[bytes]
    headers: dict[str, str]
    connections: int
    # Wait for the server to go idle after each burst, so that the rows its shipper is still
    # shipping do not share the cores with the next server's burst.
    settle: bool = False


def burst_for(workload: str) -> Burst:
    if workload == "flags":
        return Burst("/flags/?v=2", bodies(), JSON_HEADERS, 32)
    if workload == "batch":
        return Burst("/batch/", batch_body(), BATCH_HEADERS, 64, settle=True)
    if workload == "single":
        return Burst("/i/v0/e/", single_body(), SINGLE_HEADERS, 64)
    return Burst("/_health", b"{}", JSON_HEADERS, 32)


def prepare(server: Server, workload: str) -> None:
    """The flags workload's 50 flags and 100,000 stored persons, shipped before any burst."""
    if workload != "flags":
        return
    assert server.data_dir is not None
    (server.data_dir / "flags.json").write_text(json.dumps(flag_document()))
    seed_persons(server.url)
    wait_until_shipped(server.data_dir)


def send(server: Server, burst: Burst, seconds: float) -> float:
    """One burst at full speed; its requests/s."""
    url = server.url + burst.path
    rate = loadgen.run(url, burst.body, headers=burst.headers, connections=burst.connections, duration=seconds).rps
    if burst.settle:
        wait_settled(server.process.pid, timeout=300)
    return rate


def median_ratio(mine: list[float], first: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(mine, first, strict=True))


def parse_env(text: str) -> tuple[str, list[str]]:
    name, _, values = text.partition("=")
    choices = values.split(",")
    if not name or len(choices) < 2:
        raise SystemExit("--env takes NAME=VALUE,VALUE[,...]")
    return name, choices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", required=True, help="NAME=VALUE,VALUE[,...]: one server per value")
    parser.add_argument("--workload", choices=("flags", "single", "batch", "health"), default="single")
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--burst", type=float, default=2.5, help="seconds per burst")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    name, values = parse_env(args.env)
    burst = burst_for(args.workload)
    with contextlib.ExitStack() as stack:
        servers = []
        for value in values:
            server = stack.enter_context(hogflare(f"{name}={value}", args.workers, {name: value}))
            prepare(server, args.workload)
            servers.append(server)
        for server in servers:
            send(server, burst, 2.0)  # warm-up
        bursts = [functools.partial(send, server, burst, args.burst) for server in servers]
        rates = loadgen.alternate(args.cycles, bursts)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "workload": args.workload,
        "workers": args.workers,
        "cycles": args.cycles,
        "burst_s": args.burst,
        "configurations": [
            {
                name: value,
                "median_req_per_s": round(statistics.median(mine)),
                "median_ratio_to_first": round(median_ratio(mine, rates[0]), 3),
                "req_per_s": [round(rate) for rate in mine],
            }
            for value, mine in zip(values, rates, strict=True)
        ],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"paired-{args.workload}.json").write_text(json.dumps(report, indent=2) + "\n")
    for row in report["configurations"]:
        print(f"{name}={row[name]}: {row['median_req_per_s']:,} req/s, {row['median_ratio_to_first']:.0%} of the first")


if __name__ == "__main__":
    main()
