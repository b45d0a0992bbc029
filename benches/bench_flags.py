"""`/flags?v=2` under load: 50 flags (mixed operators, 5 regex, 2 multivariate, 1 group flag) for
100,000 users whose persons are in the store, on a real `hogflare serve`.

    .venv/bin/python -m benches.bench_flags [--workers 2] [--duration 10]

First the server's cheapest route (`/_health`), as the ceiling of its HTTP path, and `/flags`
in alternating bursts at full speed: the ratio of the two is the median of the cycles'. Then
`/flags` at full speed for its latency, and at half that rate for the latency a client sees, in
several shorter runs: one run's p99 is often a single hiccup of the shared machine, so each run's
is reported and the median of them is the figure. The memory sampler leaves out PSS (whose page
walk takes 12-17 ms of a core each time) during those runs: only the full-speed runs report memory.
Targets: at least 10,000 req/s on 2 cores, p99 at most 10 ms at half load.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from benches import loadgen
from benches.harness import hogflare
from hogflare._hogflare import Store

RESULTS = Path(__file__).parent / "results"
TOKEN = "phc_bench_flags"
USERS = 100_000

_OPERATORS: list[tuple[str, str, Any]] = [
    ("plan", "exact", "pro"),
    ("plan", "is_not", "free"),
    ("email", "icontains", "example"),
    ("age", "gt", 30),
    ("visits", "lte", 1000),
    ("email", "is_set", "is_set"),
    ("signed_up", "is_date_after", "-30d"),
    ("app_version", "semver_gte", "1.2.0"),
    ("country", "exact", ["de", "fr", "us"]),
]


def flag_document() -> dict[str, Any]:
    """The flags file: 50 PostHog flag objects."""
    flags: list[dict[str, Any]] = []
    for i in range(50):
        key, operator, value = ("email", "regex", rf"^user{i}-[0-9]+@") if i < 5 else _OPERATORS[i % len(_OPERATORS)]
        group = i == 30
        prop: dict[str, Any] = {"key": key, "operator": operator, "value": value, "type": "person"}
        filters: dict[str, Any] = {
            "groups": [
                {"properties": [prop], "rollout_percentage": [100, 50, 20][i % 3]},
                {"properties": [], "rollout_percentage": 5},
            ]
        }
        if group:
            prop.update(type="group", group_type_index=0)
            filters["aggregation_group_type_index"] = 0
        if i in (10, 20):
            filters["multivariate"] = {
                "variants": [{"key": "control", "rollout_percentage": 50}, {"key": "test", "rollout_percentage": 50}]
            }
            filters["payloads"] = {"test": json.dumps({"color": "blue"})}
        flags.append({"id": i + 1, "key": f"flag-{i}", "active": True, "filters": filters})
    return {"flags": flags, "group_type_mapping": {"0": "company"}}


def person(i: int, rng: random.Random) -> dict[str, Any]:
    return {
        "plan": rng.choice(["free", "pro", "team"]),
        "email": f"user{i % 7}-{i}@example.com",
        "age": rng.randint(18, 80),
        "visits": rng.randint(0, 2000),
        "signed_up": f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}T10:00:00Z",
        "app_version": f"1.{rng.randint(0, 5)}.{rng.randint(0, 9)}",
        "country": rng.choice(["de", "fr", "us", "gb", "jp"]),
    }


def seed_persons(url: str) -> float:
    """Store 100,000 persons through `/batch`; returns the seconds it took."""
    rng = random.Random(7)
    started = time.monotonic()
    with httpx.Client(timeout=60) as client:
        for start in range(0, USERS, 500):
            batch = [
                {"event": "$set", "distinct_id": f"user-{i}", "properties": {"$set": person(i, rng)}}
                for i in range(start, start + 500)
            ]
            response = client.post(f"{url}/batch/", json={"api_key": TOKEN, "batch": batch})
            response.raise_for_status()
    return time.monotonic() - started


def wait_until_shipped(data_dir: Path, timeout: float = 120.0) -> None:
    """Wait for the shipper to take the seeded persons to the lake, so that it does not share the
    cores with the runs measured."""
    store = Store(str(data_dir / "store"))
    deadline = time.monotonic() + timeout
    while store.outbox_state()[1] and time.monotonic() < deadline:
        time.sleep(0.2)


def bodies(count: int = 4000) -> list[bytes]:
    """`/flags?v=2` bodies as posthog-js sends them, for random stored users (one per line)."""
    rng = random.Random(11)
    out = []
    for _ in range(count):
        user = rng.randrange(USERS)
        body = {
            "token": TOKEN,
            "distinct_id": f"user-{user}",
            "groups": {"company": f"company-{user % 500}"},
            "person_properties": {"$current_url": "https://example.com/"},
        }
        out.append(json.dumps(body).encode())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--cycles", type=int, default=6, help="alternating bursts of the health route and /flags")
    parser.add_argument("--burst", type=float, default=2.5, help="seconds per burst")
    parser.add_argument("--half-runs", type=int, default=5, help="runs at half load, each half of --duration")
    args = parser.parse_args()
    headers = {"content-type": "application/json"}
    with hogflare("hogflare", args.workers, {}) as server:
        assert server.data_dir is not None
        (server.data_dir / "flags.json").write_text(json.dumps(flag_document()))
        seeding = seed_persons(server.url)
        wait_until_shipped(server.data_dir)
        url = f"{server.url}/flags/?v=2"
        check = httpx.post(url, content=bodies(1)[0], headers=headers, timeout=10).json()
        assert len(check["flags"]) == 50, check
        loadgen.run(url, bodies(), headers=headers, connections=args.connections, duration=2)  # warm-up

        # The same server's cheapest route is the ceiling of its HTTP path on this machine. The
        # machine's speed moves within minutes, so the two alternate in short bursts and each
        # cycle gives one ratio.
        def burst(target: str, body: bytes | list[bytes]) -> Callable[[], float]:
            return lambda: (
                loadgen.run(target, body, headers=headers, connections=args.connections, duration=args.burst).rps
            )

        health_rates, flags_rates = loadgen.alternate(
            args.cycles, [burst(f"{server.url}/_health", b"{}"), burst(url, bodies())]
        )
        full = loadgen.run(url, bodies(), headers=headers, connections=args.connections, duration=args.duration)
        with server.rss.without_pss():
            halves = [
                loadgen.run(
                    url,
                    bodies(),
                    headers=headers,
                    connections=args.connections,
                    duration=args.duration / 2,
                    rate=full.rps / 2,
                )
                for _ in range(args.half_runs)
            ]
    ratios = [flags / health for flags, health in zip(flags_rates, health_rates, strict=True)]
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": 2, "python": platform.python_version()},
        "workers": args.workers,
        "flags": 50,
        "persons": USERS,
        "seed_seconds": round(seeding, 1),
        "cycles": args.cycles,
        "health_route_req_per_s": [round(rate) for rate in health_rates],
        "flags_req_per_s": [round(rate) for rate in flags_rates],
        "flags_vs_health_route": round(statistics.median(ratios), 3),
        "full": {"req_per_s": round(full.rps), "p50_ms": full.p50_ms, "p99_ms": full.p99_ms, "statuses": full.statuses},
        "half": {
            "req_per_s": round(statistics.median(half.rps for half in halves)),
            "p50_ms": statistics.median(half.p50_ms for half in halves),
            "p99_ms": statistics.median(half.p99_ms for half in halves),
            "p99_ms_per_run": [round(half.p99_ms, 1) for half in halves],
            "statuses": dict(sum((Counter(half.statuses) for half in halves), Counter())),
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"flags-w{args.workers}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
