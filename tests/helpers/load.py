"""Steady client load against a real server, and checks of what reached the lake or a stream.

Each sender owns its distinct ids and sends their events one after another: a batch is resent with
the same uuids until it gets a 200, as the SDKs retry, and only then does the next batch go. So the
order in which each distinct id's events were acknowledged is the order a sink must keep.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from hogflare.config import Settings
from hogflare.lake import Lake
from hogflare.query import run
from tests.helpers.server import Server

TOKEN = "phc_load"
#: Headers that sign a body, for a server started with ``POSTHOG_SIGNING_SECRET``.
Signer = Callable[[bytes], dict[str, str]]
T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    """One response a sender got: its status, ``Retry-After`` and how long it took."""

    status: int
    retry_after: str | None
    seconds: float


class Sender(threading.Thread):
    """Sends ``/batch`` requests of ``batch`` events spread over ``ids`` distinct ids until stopped.

    A batch that gets anything but a 200 (an error status, a timeout, a refused connection) is sent
    again after ``retry_pause`` seconds, for up to ``patience`` seconds; a sender that is stopped
    still finishes the batch it holds, so every batch it made ends acknowledged or in ``given_up``.
    """

    def __init__(
        self,
        name: str,
        url: str,
        stop: threading.Event,
        *,
        ids: int = 25,
        batch: int = 10,
        pause: float = 0.02,
        retry_pause: float = 0.1,
        patience: float = 60.0,
        sign: Signer | None = None,
        event: str = "load",
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.url = url
        self.stop = stop
        self.ids = [f"{name}-user-{n}" for n in range(ids)]
        self.batch = batch
        self.pause = pause
        self.retry_pause = retry_pause
        self.patience = patience
        self.sign = sign
        self.event = event
        self.lock = threading.Lock()
        #: Per distinct id, its event uuids in the order they were acknowledged.
        self.acknowledged: dict[str, list[str]] = {}
        #: Every acknowledged uuid, in order.
        self.log: list[str] = []
        self.answers: list[Answer] = []
        self.transport_errors = 0
        self.given_up: list[str] = []
        self._sent = 0

    def run(self) -> None:
        with httpx.Client(timeout=10.0) as http:
            while not self.stop.is_set():
                self._deliver(http, self._next_batch())
                self.stop.wait(self.pause)

    def _next_batch(self) -> list[dict[str, Any]]:
        items = []
        for _ in range(self.batch):
            distinct_id = self.ids[self._sent % len(self.ids)]
            items.append(
                {
                    "event": self.event,
                    "distinct_id": distinct_id,
                    "uuid": str(uuid.uuid4()),
                    "properties": {"n": self._sent // len(self.ids)},
                }
            )
            self._sent += 1
        return items

    def _deliver(self, http: httpx.Client, items: list[dict[str, Any]]) -> None:
        body = json.dumps({"api_key": TOKEN, "batch": items}).encode()
        headers = {"content-type": "application/json", **(self.sign(body) if self.sign else {})}
        deadline = time.monotonic() + self.patience
        while True:
            started = time.monotonic()
            try:
                response = http.post(f"{self.url}/batch/", content=body, headers=headers)
            except httpx.HTTPError:
                with self.lock:
                    self.transport_errors += 1
            else:
                answer = Answer(response.status_code, response.headers.get("retry-after"), time.monotonic() - started)
                with self.lock:
                    self.answers.append(answer)
                    if answer.status == 200:
                        for item in items:
                            self.acknowledged.setdefault(item["distinct_id"], []).append(item["uuid"])
                            self.log.append(item["uuid"])
                        return
            if time.monotonic() > deadline:
                with self.lock:
                    self.given_up += [item["uuid"] for item in items]
                return
            time.sleep(self.retry_pause)


class Load:
    """``senders`` concurrent senders against ``url``, running inside ``with``."""

    def __init__(self, url: str, *, senders: int = 4, **options: Any) -> None:
        self.stop = threading.Event()
        self.senders = [Sender(f"sender-{n}", url, self.stop, **options) for n in range(senders)]

    def __enter__(self) -> Load:
        for sender in self.senders:
            sender.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.finish()

    def finish(self) -> None:
        """Stop making batches and wait until each sender has an answer for the one it holds."""
        self.stop.set()
        for sender in self.senders:
            sender.join(sender.patience + 20)
        assert not any(sender.is_alive() for sender in self.senders), "a sender is stuck"

    def acknowledged(self) -> dict[str, list[str]]:
        """Per distinct id, its event uuids in the order they were acknowledged."""
        merged: dict[str, list[str]] = {}
        for sender in self.senders:
            with sender.lock:
                merged.update({key: list(value) for key, value in sender.acknowledged.items()})
        return merged

    def uuids(self) -> set[str]:
        return set(self.log())

    def log(self) -> list[str]:
        """Every acknowledged uuid, sender after sender, each sender's in the order acknowledged."""
        return self._gather(lambda sender: sender.log)

    def transport_errors(self) -> int:
        return sum(sender.transport_errors for sender in self.senders)

    def answers(self) -> list[Answer]:
        return self._gather(lambda sender: sender.answers)

    def statuses(self) -> Counter[int]:
        return Counter(answer.status for answer in self.answers())

    def given_up(self) -> list[str]:
        return self._gather(lambda sender: sender.given_up)

    def wait_for(self, done: Callable[[Load], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not done(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not seen within {timeout:g}s: {dict(self.statuses())}")
            time.sleep(0.05)

    def _gather(self, part: Callable[[Sender], list[T]]) -> list[T]:
        gathered: list[T] = []
        for sender in self.senders:
            with sender.lock:
                gathered += part(sender)
        return gathered


def restart(server: Server) -> Server:
    """A new server on the data directory and port of one that was killed, so clients' retries reach it."""
    again = Server(server.data_dir, workers=server.workers, env=server.env)
    again.port, again.url = server.port, server.url
    return again.start()


def first_arrivals(rows: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """Per distinct id, its event uuids in the order of their first arrival."""
    seen: set[str] = set()
    order: dict[str, list[str]] = {}
    for row in rows:
        if row["uuid"] not in seen:
            seen.add(row["uuid"])
            order.setdefault(row["distinct_id"], []).append(row["uuid"])
    return order


def missing(acknowledged: set[str], rows: Iterable[dict[str, Any]]) -> set[str]:
    return acknowledged - {row["uuid"] for row in rows}


def out_of_order(acknowledged: dict[str, list[str]], rows: Iterable[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Distinct ids whose acknowledged events first arrived in another order: the id → (the position of the
    first event out of place, how many events the id has)."""
    arrived = first_arrivals(rows)
    wrong: dict[str, tuple[int, int]] = {}
    for distinct_id, expected in acknowledged.items():
        wanted = set(expected)
        got = [item for item in arrived.get(distinct_id, []) if item in wanted]
        if got != expected:
            pairs = enumerate(zip(got, expected, strict=False))
            first = next((index for index, (a, b) in pairs if a != b), min(len(got), len(expected)))
            wrong[distinct_id] = (first, len(expected))
    return wrong


def lake_uuids(data_dir: Path, where: str = "true") -> Counter[str]:
    """How often each event uuid is in the lake, read in-process (``hogflare query`` takes seconds to start)."""
    lake = Lake(Settings.from_env({}, data_dir=data_dir).lake_dir)
    table = run(lake, f"select uuid::varchar as uuid from events where {where}")
    return Counter(str(value) for value in table.column("uuid").to_pylist())


def wait_until(done: Callable[[], bool], what: str, timeout: float) -> None:
    """Poll ``done`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout:g}s")
        time.sleep(0.3)
