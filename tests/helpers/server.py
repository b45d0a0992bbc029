"""A real ``hogflare serve`` process on a free port, and ``hogflare query`` to read its lake."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
HOGFLARE = str(Path(sys.executable).with_name("hogflare"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """``hogflare serve`` in its own process group, so a test can SIGKILL all of it at once."""

    def __init__(
        self,
        data_dir: Path,
        *,
        workers: int = 1,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        options: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        #: ``hogflare``'s own options, before ``serve``.
        self.options = options
        self.cwd = cwd
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.env = {
            **os.environ,
            "HOGFLARE_FLUSH_INTERVAL_SECS": "0.3",
            "HOGFLARE_LOG_LEVEL": "warning",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 30.0) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    HOGFLARE,
                    *self.options,
                    "serve",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                    "--data-dir",
                    str(self.data_dir),
                ],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"hogflare exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/_readiness", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"hogflare not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful: SIGTERM, as an orchestrator would send."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._wait_group_gone()

    def kill(self) -> None:
        """A crash: SIGKILL to the server, its workers and its shipper at once."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._wait_group_gone()

    def group_gone(self, timeout: float) -> bool:
        """Whether every process of the server (workers and shipper too) has exited in time."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.05)
        return False

    def _wait_group_gone(self, timeout: float = 10.0) -> None:
        assert self.process is not None
        if not self.group_gone(timeout):
            os.killpg(self.process.pid, signal.SIGKILL)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


@contextlib.contextmanager
def serving_flags(data_dir: Path, flags: list[dict[str, Any]]) -> Iterator[Server]:
    """A server whose flags file holds ``flags``, as PostHog's local-evaluation endpoint lists them."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "flags.json").write_text(json.dumps({"flags": flags}))
    with Server(data_dir) as running:
        yield running


def query(data_dir: Path, sql: str) -> list[dict[str, Any]]:
    """Rows from ``hogflare query --format json``, exactly as a user would run it."""
    result = subprocess.run(
        [HOGFLARE, "query", "--data-dir", str(data_dir), "--format", "json", sql],
        capture_output=True,
        check=True,
        timeout=60,
    )
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def wait_for_rows(data_dir: Path, sql: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Poll the lake until ``sql`` returns at least ``count`` rows."""
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = query(data_dir, sql)
        if len(rows) >= count:
            return rows
        time.sleep(0.3)
    return rows


def metric(metrics: str, series: str) -> float:
    """The value of one series (``name{labels}``) in a ``/metrics`` text, 0 when absent."""
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(series))


def answered(server: Server, route: str) -> float:
    """Requests the server answered 200 on ``route`` (its path without the trailing slash), by its
    metrics: which endpoint an SDK really used."""
    series = f'hogflare_http_requests_total{{route="{route}",status="200"}}'
    return metric(httpx.get(f"{server.url}/metrics").text, series)
