"""``hogflare fake-pipeline``: a local stand-in for a Cloudflare Pipelines stream.

``POST /`` (any path) with a JSON array of objects stores each one in DuckDB and answers
``{"status":"ok"}``; ``GET /events`` returns every stored row as a JSON array, in the order they
arrived; ``GET /stats`` counts the rows, the POSTs, the failures, the POSTs being answered right
now and at most at once, and the largest body; ``POST /reset`` forgets the rows; ``GET /health``
answers ok. With a token, requests without ``Authorization: Bearer <token>`` get 401. With
``discard``, rows are checked and counted but not kept, so a load test measures the sender rather
than the fake's storage.

It can be told to misbehave: ``fail_rate`` of the POSTs (0 to 1) are answered with ``status`` (429
comes with ``Retry-After``), each after ``delay`` seconds. A delayed POST that does not fail still
stores its rows, as a slow stream would, even when the sender gave up waiting. With
``max_request_bytes``, a larger body is answered 413, as Cloudflare answers one over its limit.
``POST /config`` with ``{"fail_rate": …, "status": …, "delay": …, "retry_after": …, "token": …,
"max_request_bytes": …}`` changes any of these while it runs, so a test or a demo can take the
stream down and bring it back.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from pathlib import Path
from typing import Any

import duckdb
import msgspec

from hogflare.http import Receive, Request, Response, Scope, Send, StallWatch

_MAX_BODY = 64 << 20
_decode = msgspec.json.Decoder()
_decode_raw = msgspec.json.Decoder(list[msgspec.Raw])


class FakePipeline:
    """The ASGI app. Rows are kept in DuckDB (in memory, or in ``db`` when given)."""

    def __init__(
        self,
        db: Path | None = None,
        *,
        token: str | None = None,
        fail_rate: float = 0.0,
        status: int = 503,
        delay: float = 0.0,
        retry_after: float = 1.0,
        discard: bool = False,
    ) -> None:
        self.db = duckdb.connect(str(db) if db else ":memory:")
        self.db.execute("create table if not exists events (data json)")
        self.lock = threading.Lock()
        self.token = token
        self.fail_rate = fail_rate
        self.status = status
        self.delay = delay
        self.retry_after = retry_after
        self.discard = discard
        self.discarded = 0
        self.posts = 0
        self.failures = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.max_body_bytes = 0
        self.max_request_bytes: int | None = None
        self._watch: StallWatch | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if self._watch is None:
            self._watch = StallWatch(30.0)
        request = Request(scope, receive)
        response = await self.handle(request)
        await response.send(send, [])

    async def handle(self, request: Request) -> Response:
        path = request.path.rstrip("/")
        if request.method == "GET" and path == "/health":
            return Response.json({"status": "ok"})
        if self.token is not None and request.header(b"authorization") != f"Bearer {self.token}":
            return Response.json({"error": "unauthorized"}, 401)
        if request.method == "GET" and path == "/events":
            return Response.json(self.rows())
        if request.method == "GET" and path == "/stats":
            with self.lock:
                (rows,) = self.db.execute("select count(*) from events").fetchone() or (0,)
            stats = {
                "rows": rows + self.discarded,
                "posts": self.posts,
                "failures": self.failures,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "max_body_bytes": self.max_body_bytes,
            }
            return Response.json(stats)
        assert self._watch is not None
        body = await request.body(_MAX_BODY, self._watch)
        if request.method != "POST":
            return Response.json({"error": "method not allowed"}, 405)
        if path == "/reset":
            with self.lock:
                self.db.execute("delete from events")
            self.posts = self.failures = self.max_body_bytes = self.max_in_flight = self.discarded = 0
            return Response.json({"status": "ok"})
        if path == "/config":
            self.configure(_decode.decode(body or b"{}"))
            return Response.json({"status": "ok"})
        return await self.ingest(body)

    async def ingest(self, body: bytes) -> Response:
        self.posts += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._ingest(body)
        finally:
            self.in_flight -= 1

    async def _ingest(self, body: bytes) -> Response:
        self.max_body_bytes = max(self.max_body_bytes, len(body))
        if self.max_request_bytes is not None and len(body) > self.max_request_bytes:
            return Response.json({"error": "payload too large"}, 413)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_rate and random.random() < self.fail_rate:  # noqa: S311 - not for secrets
            self.failures += 1
            headers = [(b"retry-after", f"{self.retry_after:g}".encode())] if self.status == 429 else []
            return Response.json({"error": "injected failure"}, self.status, headers)
        try:
            # Discarding, the rows are only counted: each is checked for being an object without
            # being decoded, four times cheaper, so the fake takes little from the sender's CPU.
            rows = _decode_raw.decode(body) if self.discard else _decode.decode(body)
        except msgspec.DecodeError as exc:
            return Response.json({"error": f"invalid json: {exc}"}, 400)
        if self.discard:
            if not all(bytes(memoryview(row)[:1]) == b"{" for row in rows):
                return Response.json({"error": "body must be a JSON array of objects"}, 400)
            self.discarded += len(rows)
            return Response.json({"status": "ok"})
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            return Response.json({"error": "body must be a JSON array of objects"}, 400)
        if rows:
            # One statement per POST: DuckDB splits the array itself, thirty times faster than a
            # parameter set per row, so the fake keeps up with a server under load.
            with self.lock:
                self.db.execute("insert into events select unnest(cast(? as json[]))", [body.decode()])
        return Response.json({"status": "ok"})

    def rows(self) -> list[Any]:
        with self.lock:
            stored = self.db.execute("select data from events order by rowid").fetchall()
        return [_decode.decode(data) for (data,) in stored]

    def configure(self, changes: dict[str, Any]) -> None:
        for name in ("fail_rate", "status", "delay", "retry_after", "token", "max_request_bytes"):
            if name in changes:
                setattr(self, name, changes[name])


_ENV = "HOGFLARE_FAKE_PIPELINE"


def serve(
    *,
    host: str,
    port: int,
    db: Path | None,
    token: str | None,
    fail_rate: float,
    status: int,
    delay: float,
    discard: bool = False,
) -> None:
    """Serve a fake stream with Granian (one worker, which reads its options from the environment)."""
    from granian.constants import Interfaces
    from granian.server import Server

    options = {
        "db": str(db) if db else None,
        "token": token,
        "fail_rate": fail_rate,
        "status": status,
        "delay": delay,
        "discard": discard,
    }
    os.environ[_ENV] = msgspec.json.encode(options).decode()
    Server(
        "hogflare.fake_pipeline:app",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=1,
        log_access=False,
    ).serve()


_app: FakePipeline | None = None


def __getattr__(name: str) -> Any:
    """``app``: the fake the worker serves, built on first use from the options ``serve`` left."""
    global _app  # noqa: PLW0603 - one fake per worker process
    if name != "app":
        raise AttributeError(name)
    if _app is None:
        options: dict[str, Any] = _decode.decode(os.environ.get(_ENV, "{}"))
        db = options.pop("db", None)
        _app = FakePipeline(Path(db) if db else None, **options)
    return _app
