"""End-to-end ingestion benchmark: hogflare against two baselines measured in the same run.

    make bench            # or: .venv/bin/python -m benches.bench_ingest [--duration 10] [--workers 1]

Baselines: (a) nginx answering 200 to the same requests (the ceiling of any HTTP server on this
machine), (b) hogflare with the store and the lake switched off (decode only). Then hogflare as
it runs in production: every 200 synced to disk, every row shipped to the lake, the drain at the
end included. The load generator (oha) runs on the same two cores, all on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from benches import loadgen
from benches.workloads import batch_body, event_size, single_body
from hogflare.lake import Lake
from hogflare.query import run as query
from tests.helpers.server import HOGFLARE, free_port

RESULTS = Path(__file__).parent / "results"
BATCH_HEADERS = {"content-type": "application/json", "content-encoding": "gzip"}
SINGLE_HEADERS = {"content-type": "text/plain"}


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


def load(server: Server, workload: str, duration: float, connections: int, rate: float | None = None) -> Row:
    path, body, headers, per_request = {
        "batch": ("/batch/", batch_body(100), BATCH_HEADERS, 100),
        "single": ("/i/v0/e/", single_body(), SINGLE_HEADERS, 1),
    }[workload]
    mark = server.rss.mark()
    before = server.lake_rows() if server.data_dir is not None and server.name == "hogflare" else 0
    started = time.monotonic()
    result = loadgen.run(
        server.url + path, body, headers=headers, connections=connections, duration=duration, rate=rate
    )
    note = ""
    events_per_s = result.ok * per_request / result.seconds
    if server.name == "hogflare":
        # Durable means in the lake: include the time until the shipper has written every row.
        expected = before + result.ok * per_request
        while server.lake_rows() < expected:
            time.sleep(0.2)
        total = time.monotonic() - started
        events_per_s = result.ok * per_request / total
        note = f"lake drained {total - result.seconds:.1f}s after the load"
    label = workload if rate is None else f"{workload} at {rate:,.0f} req/s"
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
    with nginx(args.workers) as server:
        rows.append(load(server, "batch", d, 64))
        rows.append(load(server, "single", d, 64))
    with hogflare("decode-only", args.workers, {"HOGFLARE_STORE": "off"}) as server:
        rows.append(load(server, "batch", d, 64))
        rows.append(load(server, "single", d, 64))
    with hogflare("hogflare", args.workers, {}) as server:
        rows.append(load(server, "batch", d, 64))
        single = load(server, "single", d, 64)
        rows.append(single)
        rows.append(load(server, "single", d, 64, rate=round(single.req_per_s / 2, -2)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes (nginx and hogflare)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--skip-million", action="store_true", help="skip the 1M-event memory run")
    args = parser.parse_args()
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
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
        "workers": args.workers,
        "duration_s": args.duration,
        "repeats": args.repeats,
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
