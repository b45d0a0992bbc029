"""End-to-end ingestion benchmark: hogflare against two baselines measured in the same run.

    make bench            # or: .venv/bin/python -m benches.bench_ingest [--duration 10] [--workers 1]
    .venv/bin/python -m benches.bench_ingest --persons    # the person workloads (make bench runs both)

Baselines: (a) nginx answering 200 to the same requests (the ceiling of any HTTP server on this
machine), (b) hogflare with the store and the lake switched off (decode only). Then hogflare as
it runs in production: every 200 synced to disk, every row shipped to the lake, the drain at the
end included. The load generator (oha) runs on the same two cores, all on 127.0.0.1.

With ``--persons``: the same pageview in `/batch` bodies that ask for different person work:
personless capture (the baseline), `$set` changes across 100,000 users, and identify-heavy
traffic, each against a fresh hogflare in interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict
from typing import Any

from benches import loadgen
from benches.harness import RESULTS, Row, Server, Workload, hogflare, load, nginx, run_facts
from benches.persons import persons_main
from benches.workloads import BATCH_HEADERS, SINGLE_HEADERS, batch_body, event_size, single_body


def foundation_workload(name: str) -> Workload:
    return {
        "batch": lambda: Workload("batch", "/batch/", batch_body(100), BATCH_HEADERS, 100),
        "single": lambda: Workload("single", "/i/v0/e/", single_body(), SINGLE_HEADERS, 1),
    }[name]()


def million(server: Server) -> dict[str, Any]:
    """1M events in a row (10,000 batches of 100): the RSS timeline should stay flat."""
    mark = server.rss.mark()
    started = time.monotonic()
    result = loadgen.run(
        server.url + "/batch/", batch_body(100), headers=BATCH_HEADERS, connections=16, requests=10_000
    )
    seconds = server.wait_for_lake(result.ok * 100) - started
    window = server.rss.samples[mark:]
    pss = [sample[1] / 1e6 for sample in window]
    anonymous = [sample[2] / 1e6 for sample in window]
    quarter = max(1, len(window) // 4)
    return {
        "events": result.ok * 100,
        "seconds": round(seconds, 1),
        "events_per_s_to_lake": round(result.ok * 100 / seconds),
        "pss_mb_first_quarter_peak": round(max(pss[:quarter]), 1),
        "pss_mb_last_quarter_peak": round(max(pss[-quarter:]), 1),
        "pss_mb_peak": round(max(pss), 1),
        "anon_mb_first_quarter_peak": round(max(anonymous[:quarter]), 1),
        "anon_mb_last_quarter_peak": round(max(anonymous[-quarter:]), 1),
        "anon_mb_peak": round(max(anonymous), 1),
        "timeline_s_pss_anon_mb": [
            (round(s[0] - window[0][0], 1), round(s[1] / 1e6), round(s[2] / 1e6))
            for s in window[:: max(1, len(window) // 20)]
        ],
    }


def markdown(rows: list[Row]) -> str:
    lines = [
        "| server | workload | events/s | req/s | p50 ms | p99 ms | peak PSS MB | peak anon MB | non-200 | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.server} | {row.workload} | {row.events_per_s:,.0f} | {row.req_per_s:,.0f} | {row.p50_ms:.2f} | "
            f"{row.p99_ms:.2f} | {row.peak_pss_mb:.0f} | {row.peak_anon_mb:.0f} | {row.errors} | {row.note} |"
        )
    return "\n".join(lines)


def median_rows(runs: list[list[Row]]) -> list[Row]:
    """Per (server, workload), the run with the median events/s: repeats are interleaved so a
    slow moment of a shared machine hits every configuration alike."""
    grouped: dict[tuple[str, str], list[Row]] = {}
    for run in runs:
        for row in run:
            grouped.setdefault(
                (row.server, row.workload.split(" at ")[0] + (" at half" if " at " in row.workload else "")), []
            ).append(row)
    out = []
    for rows in grouped.values():
        rows.sort(key=lambda row: row.events_per_s)
        out.append(rows[len(rows) // 2])
    return out


def one_round(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    d = args.duration
    batch, single_event = foundation_workload("batch"), foundation_workload("single")
    with nginx(args.workers) as server:
        rows.append(load(server, batch, d, 64))
        rows.append(load(server, single_event, d, 64))
    with hogflare("decode-only", args.workers, {"HOGFLARE_STORE": "off"}) as server:
        rows.append(load(server, batch, d, 64))
        rows.append(load(server, single_event, d, 64))
    with hogflare("hogflare", args.workers, {}) as server:
        rows.append(load(server, batch, d, 64))
        single = load(server, single_event, d, 64)
        rows.append(single)
        rows.append(load(server, single_event, d, 64, rate=round(single.req_per_s / 2, -2)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes (nginx and hogflare)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--skip-million", action="store_true", help="skip the 1M-event memory run")
    parser.add_argument(
        "--persons", action="store_true", help="run the person workloads (capture-only, set-heavy, identify-heavy)"
    )
    parser.add_argument("--bodies", type=int, default=4000, help="distinct request bodies per person workload")
    args = parser.parse_args()
    if args.persons:
        persons_main(args)
        return
    if not shutil.which("nginx"):
        raise SystemExit("nginx not found: apt-get install nginx-light (make bench does)")

    runs = [one_round(args) for _ in range(args.repeats)]
    rows = median_rows(runs)
    million_result: dict[str, Any] = {}
    if not args.skip_million:
        with hogflare("hogflare", args.workers, {}) as server:
            million_result = million(server)

    by = {(row.server, row.workload.split(" at ")[0]): row for row in rows if " at " not in row.workload}
    ratios = {
        "batch: hogflare / decode-only (events/s to the lake)": by["hogflare", "batch"].events_per_s
        / by["decode-only", "batch"].events_per_s,
        "batch: hogflare / decode-only (acknowledged req/s)": by["hogflare", "batch"].req_per_s
        / by["decode-only", "batch"].req_per_s,
        "single: hogflare / decode-only (req/s)": by["hogflare", "single"].req_per_s
        / by["decode-only", "single"].req_per_s,
        "single: decode-only / nginx (req/s)": by["decode-only", "single"].req_per_s / by["nginx", "single"].req_per_s,
    }
    report = {
        **run_facts(args),
        "event_bytes": event_size(),
        "batch_body_bytes": len(batch_body(100)),
        "single_body_bytes": len(single_body()),
        "rows": [asdict(row) for row in rows],
        "all_runs": [[asdict(row) for row in run] for run in runs],
        "ratios": {key: round(value, 3) for key, value in ratios.items()},
        "million": million_result,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"ingest-w{args.workers}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(rows))
    print()
    for key, value in ratios.items():
        print(f"- {key}: {value:.0%}")
    if million_result:
        print(f"- 1M events: { {k: v for k, v in million_result.items() if k != 'timeline_s_pss_anon_mb'} }")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
