"""The person workloads of ``python -m benches.bench_ingest --persons``: the same pageview in
`/batch` bodies that ask for different person work (personless capture as the baseline, `$set`
changes across 100,000 users, identify-heavy traffic), each against a fresh hogflare whose store
already holds the users, in rounds whose order rotates."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import httpx

from benches.harness import RESULTS, Row, Server, Workload, hogflare, load, run_facts
from benches.workloads import BATCH_HEADERS, PERSON_USERS, PERSON_WORKLOADS, person_bodies, seed_bodies

#: The person workloads' bodies are base64 text, one of many picked at random per request.
PERSON_PATH = "/batch/?compression=base64"
PERSON_HEADERS = {"content-type": "text/plain"}

PERSONS_TARGET = 0.70


def seed(server: Server, bodies: list[bytes]) -> None:
    """Create the 100,000 users before the load (not timed), and wait until the lake has them."""
    with httpx.Client(base_url=server.url, headers=BATCH_HEADERS, timeout=60) as client:

        def post(body: bytes) -> None:
            client.post("/batch/", content=body).raise_for_status()

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(post, bodies))
    server.wait_for_lake(PERSON_USERS)


def persons_round(
    args: argparse.Namespace, workloads: dict[str, Workload], seeds: list[bytes], index: int
) -> dict[str, Row]:
    """Each workload against a fresh hogflare whose store holds the 100,000 users; the order
    rotates from round to round so that no workload always runs first or last."""
    shift = index % len(PERSON_WORKLOADS)
    rows = {}
    for name in PERSON_WORKLOADS[shift:] + PERSON_WORKLOADS[:shift]:
        with hogflare("hogflare", args.workers, {}) as server:
            seed(server, seeds)
            before = server.person_stats()
            row = load(server, workloads[name], args.duration, 64)
            after = server.person_stats()
            # What the load did; `live` stays the count of persons at the end.
            row.persons = {key: value - before[key] if key != "live" else value for key, value in after.items()}
            rows[name] = row
    return {name: rows[name] for name in PERSON_WORKLOADS}


def persons_markdown(medians: dict[str, dict[str, float]], rows: dict[str, Row]) -> str:
    lines = [
        "| workload | events/s acknowledged | events/s to the lake | req/s | p50 ms | p99 ms | peak PSS MB | "
        "peak anon MB | person changes / event | live persons | merges | non-200 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in rows.items():
        persons = row.persons
        changes = persons.get("changes", 0) / max(1, persons.get("events", 0))
        lines.append(
            f"| {name} | {medians[name]['acknowledged']:,.0f} | {medians[name]['lake']:,.0f} | {row.req_per_s:,.0f} | "
            f"{row.p50_ms:.2f} | {row.p99_ms:.2f} | {row.peak_pss_mb:.0f} | {row.peak_anon_mb:.0f} | {changes:.2f} | "
            f"{persons.get('live', 0):,} | {persons.get('merged', 0):,} | {row.errors} |"
        )
    return "\n".join(lines)


def persons_main(args: argparse.Namespace) -> None:
    started = time.monotonic()
    workloads = {
        name: Workload(name, PERSON_PATH, person_bodies(name, args.bodies), PERSON_HEADERS, 100)
        for name in PERSON_WORKLOADS
    }
    print(f"generated {args.bodies:,} bodies per workload in {time.monotonic() - started:.0f}s", flush=True)
    seeds = seed_bodies()
    runs = [persons_round(args, workloads, seeds, index) for index in range(args.repeats)]

    medians = {
        name: {
            "acknowledged": statistics.median(run[name].acked_events_per_s for run in runs),
            "lake": statistics.median(run[name].events_per_s for run in runs),
        }
        for name in PERSON_WORKLOADS
    }
    # Latency, memory and person counts: the round with the median acknowledged events/s.
    rows = {
        name: sorted((run[name] for run in runs), key=lambda row: row.acked_events_per_s)[len(runs) // 2]
        for name in PERSON_WORKLOADS
    }
    ratios: dict[str, float] = {}
    paired: dict[str, list[float]] = {}
    for name in PERSON_WORKLOADS[1:]:
        for metric, label in (("acknowledged", "acknowledged events/s"), ("lake", "events/s to the lake")):
            key = f"{name} / capture-only ({label})"
            ratios[key] = medians[name][metric] / medians["capture-only"][metric]
            paired[key] = [
                (run[name].acked_events_per_s / run["capture-only"].acked_events_per_s)
                if metric == "acknowledged"
                else (run[name].events_per_s / run["capture-only"].events_per_s)
                for run in runs
            ]
    sample = workloads["set-heavy"].body
    assert isinstance(sample, list)
    report = {
        **run_facts(args),
        "bodies_per_workload": args.bodies,
        "events_per_body": 100,
        "body_bytes_mean": {
            name: round(statistics.mean(len(body) for body in workload.body))
            for name, workload in workloads.items()
            if isinstance(workload.body, list)
        },
        "medians_events_per_s": {name: {k: round(v) for k, v in m.items()} for name, m in medians.items()},
        "rows": {name: asdict(row) for name, row in rows.items()},
        "all_runs": [{name: asdict(row) for name, row in run.items()} for run in runs],
        "target": PERSONS_TARGET,
        "ratios": {key: round(value, 3) for key, value in ratios.items()},
        "ratios_per_round": {key: [round(value, 3) for value in values] for key, values in paired.items()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"persons-w{args.workers}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(persons_markdown(medians, rows))
    print()
    for key, value in ratios.items():
        verdict = "met" if value >= PERSONS_TARGET else "not met"
        rounds = ", ".join(f"{v:.0%}" for v in paired[key])
        print(f"- {key}: {value:.0%} (target {PERSONS_TARGET:.0%}: {verdict}; per round {rounds})")
    sys.stdout.flush()
