"""What the end-to-end benchmarks share: servers started for one measurement (hogflare, and
nginx as the ceiling of any HTTP server here), their memory sampled over time, and a bounded
load against one of them that counts until the lake holds every acknowledged row."""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

from benches import loadgen
from hogflare.lake import Lake
from hogflare.lake_tables import EVENTS
from hogflare.query import run as query
from tests.helpers.server import HOGFLARE, free_port

RESULTS = Path(__file__).parent / "results"
T = TypeVar("T")


def measure_group(pgid: int, measure: Callable[[psutil.Process], T]) -> dict[int, T]:
    """``measure`` of each live process of a process group, by pid; one that exits meanwhile is
    left out."""
    measured: dict[int, T] = {}
    for process in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(process.pid) == pgid:
                measured[process.pid] = measure(process)
        except (psutil.Error, ProcessLookupError, FileNotFoundError):
            continue
    return measured


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
        self._pss = threading.Event()
        self._pss.set()

    @contextmanager
    def without_pss(self) -> Iterator[None]:
        """Only the cheap anonymous RSS while a run measures latency (samples keep the last PSS)."""
        self._pss.clear()
        try:
            yield
        finally:
            self._pss.set()

    def current(self) -> tuple[int, int]:
        each = measure_group(self.pgid, lambda process: (process.memory_full_info().pss, _anonymous_rss(process.pid)))
        return sum(pss for pss, _ in each.values()), sum(anonymous for _, anonymous in each.values())

    def anonymous(self) -> int:
        return sum(measure_group(self.pgid, lambda process: _anonymous_rss(process.pid)).values())

    def run(self) -> None:
        # PSS walks every mapped page of every process: 12-17 ms of the harness's CPU per sample
        # for a server whose store map is warm (4 ms without a store), taken from the cores the
        # server under test runs on. So PSS is sampled once a second and the cheap anonymous RSS
        # four times a second.
        pss = 0
        for tick in itertools.count():
            if self.stop.wait(0.25):
                return
            if tick % 4 == 0 and self._pss.is_set():
                pss, anonymous = self.current()
            else:
                anonymous = self.anonymous()
            self.samples.append((time.monotonic(), pss, anonymous))

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
        """Event rows a user's query of the lake counts."""
        assert self.data_dir is not None
        return int(query(Lake(self.data_dir / "lake"), "select count(*) as n from events").column("n")[0].as_py())

    def wait_for_lake(self, rows: int, timeout: float = 900.0) -> float:
        """Until the lake's events table holds ``rows``: polled from the table's newest snapshot
        (a few milliseconds each, where a query costs a tenth of a second of the CPU the shipper
        is using to get there), then confirmed by a query. Returns when (``time.monotonic()``)
        the snapshot had them."""
        assert self.data_dir is not None
        lake = Lake(self.data_dir / "lake")
        deadline = time.monotonic() + timeout
        while True:
            snapshot = lake.refresh(EVENTS).current_snapshot()
            summary = snapshot.summary if snapshot is not None else None
            if summary is not None and int(summary.get("total-records", 0)) >= rows:
                reached = time.monotonic()
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the lake did not reach {rows} event rows in {timeout:.0f}s")
            time.sleep(0.05)
        if self.lake_rows() < rows:
            raise RuntimeError(f"the lake's snapshot counts {rows} event rows, a query of it fewer")
        return reached

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


def wait_settled(pgid: int, timeout: float = 60) -> None:
    """Until a server's processes are nearly idle, twice in a row: ready to answer is not done
    starting (the shipper still imports its libraries for a few seconds), and a load begun then
    would share the cores with that. A process that exits drops out; one that appears counts
    from zero."""
    deadline = time.monotonic() + timeout

    def cpu_seconds() -> dict[int, float]:
        return measure_group(pgid, lambda process: sum(process.cpu_times()[:2]))

    before = cpu_seconds()
    quiet = 0
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds()
        used = sum(seconds - before.get(pid, 0.0) for pid, seconds in now.items())
        quiet = quiet + 1 if used < 0.05 else 0
        if quiet == 2:
            return
        before = now
    raise TimeoutError("the server did not settle")


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
        try:
            wait_ready(url, "/_readiness", 60)
            wait_settled(process.pid)
        except BaseException:
            stop(process)
            raise
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
        total = server.wait_for_lake(before + result.ok * per_request) - started
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
