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
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from benches import loadgen
from benches.workloads import (
    PERSON_USERS,
    PERSON_WORKLOADS,
    batch_body,
    event_size,
    person_bodies,
    seed_bodies,
    single_body,
)
from hogflare.lake import Lake
from hogflare.query import run as query
from tests.helpers.server import HOGFLARE, free_port

RESULTS = Path(__file__).parent / "results"
BATCH_HEADERS = {"content-type": "application/json", "content-encoding": "gzip"}
SINGLE_HEADERS = {"content-type": "text/plain"}
#: The person workloads' bodies are base64 text, one of many picked at random per request.
PERSON_PATH = "/batch/?compression=base64"
PERSON_HEADERS = {"content-type": "text/plain"}


def _anonymous_rss(pid: int) -> int:
    """RssAnon: memory the process owns, without the page cache its memory maps touch."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


class RssSampler(threading.Thread):
    """Memory of a process group (server, workers, shipper) over time.

    Summing plain RSS over processes counts shared pages (libraries, the store's memory map) once
    per process; PSS splits them fairly, and anonymous RSS leaves out the page cache that the
    LMDB map pulls in. Samples are (time, PSS, anonymous RSS)."""

    def __init__(self, pgid: int) -> None:
        super().__init__(daemon=True)
        self.pgid = pgid
        self.samples: list[tuple[float, int, int]] = []
        self.stop = threading.Event()

    def current(self) -> tuple[int, int]:
        pss = anonymous = 0
        for process in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(process.pid) == self.pgid:
                    pss += process.memory_full_info().pss
                    anonymous += _anonymous_rss(process.pid)
            except (psutil.Error, ProcessLookupError, FileNotFoundError):
                continue
        return pss, anonymous

    def run(self) -> None:
        while not self.stop.wait(0.25):
            self.samples.append((time.monotonic(), *self.current()))

    def mark(self) -> int:
        return len(self.samples)

    def peak_since(self, mark: int) -> tuple[float, float]:
        """Peak PSS and peak anonymous RSS, in MB, since ``mark``."""
        window = self.samples[mark:]
        return (max((s[1] for s in window), default=0) / 1e6, max((s[2] for s in window), default=0) / 1e6)


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    data_dir: Path | None = None
    rss: RssSampler = field(init=False)

    def __post_init__(self) -> None:
        self.rss = RssSampler(self.process.pid)
        self.rss.start()

    def lake_rows(self) -> int:
        assert self.data_dir is not None
        return int(query(Lake(self.data_dir / "lake"), "select count(*) as n from events").column("n")[0].as_py())

    def person_stats(self) -> dict[str, int]:
        """What the events did to persons, from the lake: ``changes`` counts distinct (person,
        version) pairs, each a change some event made; every personful event writes a snapshot."""
        assert self.data_dir is not None
        lake = Lake(self.data_dir / "lake")
        table = query(
            lake,
            """select count(*) as snapshots,
                      count(distinct person_int_id) as persons,
                      count(distinct (person_int_id, version)) as changes,
                      count(*) filter (where operation = 'merged') as merged
               from persons""",
        )
        stats = {name: int(table.column(name)[0].as_py() or 0) for name in table.column_names}
        live = query(lake, "select count(*) as n from persons_latest")
        stats["live"] = int(live.column("n")[0].as_py())
        stats["events"] = self.lake_rows()
        return stats


def run_facts(args: argparse.Namespace) -> dict[str, Any]:
    """What every results file records about the run: when, on what, with which settings."""
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
        "workers": args.workers,
        "duration_s": args.duration,
        "repeats": args.repeats,
    }


def wait_ready(url: str, path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready")


def stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)


@contextmanager
def nginx(workers: int) -> Iterator[Server]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(
            f"worker_processes {workers};\ndaemon off;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\n"
            "events { worker_connections 4096; }\n"
            f"http {{ access_log off; client_body_temp_path {tmp}/body; client_max_body_size 50m;\n"
            f"  server {{ listen 127.0.0.1:{port}; location / {{ return 200 '{{\"status\":1}}'; }} }} }}\n"
        )
        process = subprocess.Popen(["nginx", "-c", str(conf)], start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, "/")
        server = Server("nginx", url, process)
        try:
            yield server
        finally:
            server.rss.stop.set()
            stop(process)


@contextmanager
def hogflare(name: str, workers: int, env: dict[str, str]) -> Iterator[Server]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        full_env = {**os.environ, "HOGFLARE_LOG_LEVEL": "warning", **env}
        args = [HOGFLARE, "serve", "--port", str(port), "--workers", str(workers), "--data-dir", str(data_dir)]
        process = subprocess.Popen(args, env=full_env, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, "/_readiness", 60)
        server = Server(name, url, process, data_dir)
        try:
            yield server
        finally:
            server.rss.stop.set()
            stop(process)


@dataclass
class Row:
    server: str
    workload: str
    events_per_s: float
    req_per_s: float
    p50_ms: float
    p99_ms: float
    peak_pss_mb: float
    peak_anon_mb: float
    errors: int
    note: str = ""
    acked_events_per_s: float = 0.0
    persons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Workload:
    name: str
    path: str
    body: bytes | list[bytes]
    headers: dict[str, str]
    events_per_request: int


def foundation_workload(name: str) -> Workload:
    return {
        "batch": lambda: Workload("batch", "/batch/", batch_body(100), BATCH_HEADERS, 100),
        "single": lambda: Workload("single", "/i/v0/e/", single_body(), SINGLE_HEADERS, 1),
    }[name]()


def load(server: Server, workload: Workload, duration: float, connections: int, rate: float | None = None) -> Row:
    per_request = workload.events_per_request
    mark = server.rss.mark()
    before = server.lake_rows() if server.data_dir is not None and server.name == "hogflare" else 0
    started = time.monotonic()
    result = loadgen.run(
        server.url + workload.path,
        workload.body,
        headers=workload.headers,
        connections=connections,
        duration=duration,
        rate=rate,
    )
    note = ""
    acked = result.ok * per_request / result.seconds
    events_per_s = acked
    if server.name == "hogflare":
        # Durable means in the lake: include the time until the shipper has written every row.
        expected = before + result.ok * per_request
        while server.lake_rows() < expected:
            time.sleep(0.2)
        total = time.monotonic() - started
        events_per_s = result.ok * per_request / total
        note = f"lake drained {total - result.seconds:.1f}s after the load"
    label = workload.name if rate is None else f"{workload.name} at {rate:,.0f} req/s"
    return Row(
        server=server.name,
        workload=label,
        events_per_s=events_per_s,
        req_per_s=result.rps,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        peak_pss_mb=server.rss.peak_since(mark)[0],
        peak_anon_mb=server.rss.peak_since(mark)[1],
        errors=result.requests - result.ok,
        note=note,
        acked_events_per_s=acked,
    )


def million(server: Server) -> dict[str, Any]:
    """1M events in a row (10,000 batches of 100): the RSS timeline should stay flat."""
    mark = server.rss.mark()
    started = time.monotonic()
    result = loadgen.run(
        server.url + "/batch/", batch_body(100), headers=BATCH_HEADERS, connections=16, requests=10_000
    )
    while server.lake_rows() < 1_000_000 + 0:
        time.sleep(0.5)
        if time.monotonic() - started > 900:
            break
    window = server.rss.samples[mark:]
    pss = [sample[1] / 1e6 for sample in window]
    anonymous = [sample[2] / 1e6 for sample in window]
    quarter = max(1, len(window) // 4)
    return {
        "events": result.ok * 100,
        "seconds": round(time.monotonic() - started, 1),
        "events_per_s_to_lake": round(result.ok * 100 / (time.monotonic() - started)),
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


PERSONS_TARGET = 0.70


def seed(server: Server, bodies: list[bytes]) -> None:
    """Create the 100,000 users before the load (not timed), and wait until the lake has them."""
    with httpx.Client(base_url=server.url, headers=BATCH_HEADERS, timeout=60) as client:

        def post(body: bytes) -> None:
            client.post("/batch/", content=body).raise_for_status()

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(post, bodies))
    while server.lake_rows() < PERSON_USERS:
        time.sleep(0.2)


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
