"""What the Cloudflare Pipelines sink costs: the batched workload with the sink on (a fake pipeline
on loopback) and off, in interleaved rounds of one run.

    .venv/bin/python -m benches.bench_sinks [--duration 10] [--workers 2] [--repeats 3]

Per round and configuration, a fresh server takes (a) the most it can (64 connections, as in
bench_ingest), then (b) a steady rate of half the lake-only maximum of that round. (a) gives the
cost of the sink in acknowledged events/s; (b) shows whether shipping keeps up: the outbox depth,
sampled every half second, must stay flat, and every row must reach the lake and the stream.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from benches import loadgen
from benches.bench_ingest import foundation_workload
from benches.harness import RESULTS, Server, hogflare, run_facts, stop, wait_ready
from hogflare._hogflare import Store
from tests.helpers.server import HOGFLARE, free_port

#: The sink may cost at most this fraction of the acknowledged events/s.
TARGET_COST = 0.15


@contextmanager
def fake_pipeline() -> Iterator[str]:
    """A fake stream that checks and counts rows but keeps none, at the lowest CPU priority: it
    stands for a service elsewhere, so the bench measures what hogflare spends, not the fake."""
    port = free_port()
    args = ["nice", "-n", "19", HOGFLARE, "fake-pipeline", "--port", str(port), "--discard"]
    process = subprocess.Popen(args, start_new_session=True, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, "/health")
        yield url
    finally:
        stop(process)


def stream_rows(url: str) -> int:
    return int(httpx.get(f"{url}/stats", timeout=10).json()["rows"])


class OutboxSampler(threading.Thread):
    """Rows waiting in the outbox (some sink lacks them), every half second."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(daemon=True)
        self.store = Store(str(data_dir / "store"))
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self.stop.wait(0.5):
            _, rows, _ = self.store.outbox_state()
            self.samples.append((round(time.monotonic() - started, 1), rows))


@dataclass
class Measure:
    config: str
    load: str
    acked_events_per_s: float
    delivered_events_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    outbox_rows_first_third_max: int
    outbox_rows_last_third_max: int
    outbox_rows_peak: int
    drained_after_s: float


def measure(server: Server, stream: str | None, label: str, duration: float, rate: float | None) -> Measure:
    assert server.data_dir is not None
    workload = foundation_workload("batch")
    lake_before = server.lake_rows()
    stream_before = stream_rows(stream) if stream else 0
    sampler = OutboxSampler(server.data_dir)
    sampler.start()
    started = time.monotonic()
    result = loadgen.run(
        server.url + workload.path,
        workload.body,
        headers=workload.headers,
        connections=64,
        duration=duration,
        rate=rate,
    )
    sampler.stop.set()
    sampler.join()
    sent = result.ok * workload.events_per_request
    total = server.wait_for_lake(lake_before + sent) - started
    while stream and stream_rows(stream) < stream_before + sent:
        time.sleep(0.2)
        total = time.monotonic() - started
    depths = [rows for _, rows in sampler.samples] or [0]
    third = max(1, len(depths) // 3)
    return Measure(
        config="lake + pipelines" if stream else "lake only",
        load=label,
        acked_events_per_s=sent / result.seconds,
        delivered_events_per_s=sent / total,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        errors=result.requests - result.ok,
        outbox_rows_first_third_max=max(depths[:third]),
        outbox_rows_last_third_max=max(depths[-third:]),
        outbox_rows_peak=max(depths),
        drained_after_s=round(total - result.seconds, 1),
    )


def each_config(
    args: argparse.Namespace, order: list[bool], label: str, duration: float, rate: float | None
) -> dict[bool, Measure]:
    """One fresh server per configuration (with the stream or without), measured alike."""
    out: dict[bool, Measure] = {}
    for with_stream in order:
        env = {}
        with fake_pipeline() as stream:
            if with_stream:
                env["CLOUDFLARE_PIPELINE_ENDPOINT"] = stream
            with hogflare("hogflare", args.workers, env) as server:
                out[with_stream] = measure(server, stream if with_stream else None, label, duration, rate)
    return out


def one_round(args: argparse.Namespace, index: int) -> list[Measure]:
    """Lake only and lake + pipelines, in an order that alternates from round to round."""
    order = [False, True] if index % 2 == 0 else [True, False]
    full = each_config(args, order, "full", args.duration, None)
    steady_rate = round(full[False].acked_events_per_s / 100 / 2, -1)  # requests/s of 100 events
    label = f"steady {steady_rate * 100:,.0f} events/s"
    steady = each_config(args, order, label, args.steady_duration, steady_rate)
    return [full[False], full[True], steady[False], steady[True]]


def markdown(rows: list[Measure]) -> str:
    lines = [
        "| sinks | load | events/s acknowledged | events/s delivered | p50 ms | p99 ms | outbox rows: "
        "first third max | last third max | peak | drained after s | non-200 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row.config} | {row.load} | {row.acked_events_per_s:,.0f} | {row.delivered_events_per_s:,.0f} | "
            f"{row.p50_ms:.2f} | {row.p99_ms:.2f} | {row.outbox_rows_first_third_max:,} | "
            f"{row.outbox_rows_last_third_max:,} | {row.outbox_rows_peak:,} | {row.drained_after_s} | {row.errors} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of full load per configuration")
    parser.add_argument("--steady-duration", type=float, default=20.0, help="seconds of steady load")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    args = parser.parse_args()

    runs = [one_round(args, index) for index in range(args.repeats)]
    costs = [1 - run[1].acked_events_per_s / run[0].acked_events_per_s for run in runs]
    median_run = sorted(runs, key=lambda run: run[1].acked_events_per_s / run[0].acked_events_per_s)[len(runs) // 2]
    cost = statistics.median(costs)
    steady = median_run[3]
    keeps_up = steady.outbox_rows_last_third_max <= max(steady.outbox_rows_first_third_max, 1) * 1.5
    report = {
        **run_facts(args),
        "steady_duration_s": args.steady_duration,
        "target_cost": TARGET_COST,
        "cost_per_round": [round(value, 3) for value in costs],
        "cost_median": round(cost, 3),
        "steady_outbox_flat": keeps_up,
        "rows": [asdict(row) for row in median_run],
        "all_runs": [[asdict(row) for row in run] for run in runs],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"sinks-w{args.workers}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(median_run))
    print()
    verdict = "met" if cost <= TARGET_COST else "not met"
    rounds = ", ".join(f"{value:.0%}" for value in costs)
    print(
        f"- the Pipelines sink costs {cost:.0%} of acknowledged events/s (target ≤ {TARGET_COST:.0%}: {verdict}; "
        f"per round {rounds})"
    )
    print(f"- steady load: outbox {'flat' if keeps_up else 'growing'} with the sink on")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
