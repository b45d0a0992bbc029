"""A real ``hogflare fake-pipeline`` process, told how to misbehave while it runs, and what reached it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import httpx

from tests.helpers.server import HOGFLARE, free_port


class FakeStream:
    """``hogflare fake-pipeline`` on a free port; ``configure`` changes its behaviour through ``POST /config``."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token: str | None = None
        self.process = subprocess.Popen(
            [HOGFLARE, "fake-pipeline", "--port", str(self.port), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError("fake pipeline not ready")

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    def rows(self) -> list[dict[str, Any]]:
        """Every row received, in the order the rows arrived (a row sent twice is there twice)."""
        rows: list[dict[str, Any]] = httpx.get(f"{self.url}/events", headers=self.auth, timeout=30).json()
        return rows

    def events(self) -> list[dict[str, Any]]:
        """The event rows received, in arrival order (person snapshot rows have an ``operation``)."""
        return [row for row in self.rows() if "operation" not in row]

    def wait_for_events(self, uuids: set[str], timeout: float = 60.0) -> list[dict[str, Any]]:
        """Poll until every one of ``uuids`` has arrived; then the event rows, in arrival order."""
        deadline = time.monotonic() + timeout
        lacking = len(uuids)
        while time.monotonic() < deadline:
            # Counting is cheap for the fake; reading every row is not, so only once it can be enough.
            if self.stats()["rows"] >= len(uuids):
                events = self.events()
                lacking = len(uuids - {row["uuid"] for row in events})
                if not lacking:
                    return events
            time.sleep(0.3)
        raise AssertionError(f"{lacking} of {len(uuids)} uuids not at the stream within {timeout:g}s")

    def stats(self) -> dict[str, int]:
        stats: dict[str, int] = httpx.get(f"{self.url}/stats", headers=self.auth, timeout=10).json()
        return stats

    def configure(self, **changes: Any) -> None:
        httpx.post(f"{self.url}/config", json=changes, headers=self.auth, timeout=10).raise_for_status()
        if "token" in changes:
            self.token = changes["token"]

    def reset(self) -> None:
        """Well-behaved and empty; POSTs a previous test left sleeping land before the rows go."""
        self.configure(token=None, fail_rate=0, delay=0)
        self.wait_for_stats(lambda stats: stats["in_flight"] == 0, "the POSTs in flight to finish", timeout=60)
        httpx.post(f"{self.url}/reset", timeout=10).raise_for_status()

    def wait_for_stats(self, done: Callable[[dict[str, int]], bool], what: str, timeout: float = 30.0) -> None:
        """Poll ``/stats`` until ``done`` holds, e.g. until the sender has met a new behaviour."""
        deadline = time.monotonic() + timeout
        while not done(stats := self.stats()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not seen within {timeout:g}s: {stats}")
            time.sleep(0.05)

    def wait_for_more(self, counter: str, count: int, since: dict[str, int], what: str, timeout: float = 30.0) -> None:
        """Poll ``/stats`` until ``counter`` has grown by ``count`` from what it was in ``since``."""
        self.wait_for_stats(lambda now: now[counter] >= since[counter] + count, what, timeout)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> FakeStream:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
