"""The small slice of ASGI hogflare needs: a request, a response, CORS, and a capped body read."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import msgspec

from hogflare.errors import PayloadError, PayloadTooLargeError, RequestTimeoutError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = b"application/json"
_encode = msgspec.json.Encoder().encode
#: Versions whose server (hyper) ends a body at its ``Content-Length`` and refuses one that breaks it.
_LENGTH_FRAMED = frozenset({"1.0", "1.1"})


class ClientDisconnectedError(Exception):
    """The client went away before its request was read."""


class Request:
    __slots__ = ("_body", "_headers", "_query_params", "method", "path", "query", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query: bytes = scope.get("query_string", b"")
        self._headers: dict[bytes, str] | None = None
        self._query_params: dict[str, list[str]] | None = None
        self._body: bytes | None = None

    @property
    def raw_path(self) -> str:
        """The path as sent, its ``%XX`` escapes kept (so an escaped ``/`` is not a separator)."""
        raw = self.scope.get("raw_path")
        return raw.decode("latin-1") if isinstance(raw, bytes) else self.path

    def header(self, name: bytes) -> str | None:
        """A request header by lower-case name; repeated headers are joined with a comma."""
        if self._headers is None:
            headers: dict[bytes, str] = {}
            for key, value in self.scope["headers"]:
                text = value.decode("latin-1")
                headers[key] = f"{headers[key]},{text}" if key in headers else text
            self._headers = headers
        return self._headers.get(name)

    def query_param(self, name: str) -> str | None:
        """The first value of a query parameter (``+`` and ``%XX`` decoded), or ``None``."""
        if self._query_params is None:
            self._query_params = _parse_query(self.query.decode("latin-1"))
        values = self._query_params.get(name)
        return values[0] if values else None

    async def body(self, limit: int, watch: StallWatch) -> bytes:
        """Read the whole body, refusing more than ``limit`` bytes or a stall ``watch`` catches.

        The bytes are kept: the signature check and the route handler read the same body once."""
        if self._body is None:
            self._body = await self._read_body(limit, watch)
        return self._body

    async def _read_body(self, limit: int, watch: StallWatch) -> bytes:
        expected = self._declared_length()
        if expected > limit:
            raise PayloadTooLargeError(f"request body exceeds the maximum of {limit} bytes")
        if self.scope.get("http_version") not in _LENGTH_FRAMED:
            # HTTP/2 checks a stream's length only when its next frame arrives, after the body
            # would have been handed over: a stream that breaks its length must not be stored.
            expected = -1
        if expected == 0:
            return b""
        task = watch.begin()
        try:
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await self.receive()
                watch.progress(task)
                if message["type"] == "http.disconnect":
                    raise ClientDisconnectedError
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(f"request body exceeds the maximum of {limit} bytes")
                if size > expected >= 0:
                    raise PayloadError("the request body is longer than its Content-Length")
                # Granian hands over the last chunk with ``more_body`` still true and says the body
                # has ended only on the next ``receive()``, a second trip through the event loop
                # that costs a small request a tenth of its throughput: a body of the declared
                # length is whole (hyper has checked the length, and ended the body, by then).
                if size == expected or not message.get("more_body", False):
                    if not chunks:
                        return chunk
                    chunks.append(chunk)
                    return b"".join(chunks)
                chunks.append(chunk)
        except asyncio.CancelledError:
            why = watch.message(task)
            if watch.expired(task):
                raise RequestTimeoutError(why) from None
            raise
        finally:
            watch.end(task)

    def _declared_length(self) -> int:
        """The body's length as ``Content-Length`` gives it, or -1 when it does not bind (absent,
        repeated, malformed, or overridden by ``Transfer-Encoding``)."""
        declared = self.header(b"content-length")
        # isascii: ``isdigit`` also takes digits ``int`` refuses (a superscript two).
        if declared is None or not (declared.isascii() and declared.isdigit()):
            return -1
        return -1 if self.header(b"transfer-encoding") is not None else int(declared)


def _parse_query(query: str) -> dict[str, list[str]]:
    # parse_qs, without its cost for the plain ``v=2&compression=gzip-js`` most requests carry.
    if "%" in query or "+" in query or ";" in query:
        return parse_qs(query)
    params: dict[str, list[str]] = {}
    for pair in query.split("&"):
        name, has_value, value = pair.partition("=")
        if has_value and value:
            params.setdefault(name, []).append(value)
    return params


class StallWatch:
    """Cancels body reads that make no progress for ``timeout`` seconds, or that take longer than
    ``deadline`` seconds in all (a client trickling a byte now and then never stalls).

    One sweep per fraction of the timeout over the reads in flight costs less than arming and
    disarming a timer around every ``receive()``, which is most of what a small request costs.
    """

    def __init__(self, timeout: float, deadline: float | None = None) -> None:
        self.timeout = timeout
        self.deadline = deadline
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        #: When each read must be over, however steadily it progresses.
        self._ends: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def begin(self) -> asyncio.Task[Any]:
        task = asyncio.current_task()
        assert task is not None, "body reads run inside a task"
        now = task.get_loop().time()
        self._deadlines[task] = now + self.timeout
        if self.deadline is not None:
            self._ends[task] = now + self.deadline
            self._deadlines[task] = min(self._deadlines[task], self._ends[task])
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep())
        return task

    def progress(self, task: asyncio.Task[Any]) -> None:
        if task in self._deadlines:
            stalls_at = task.get_loop().time() + self.timeout
            end = self._ends.get(task)
            self._deadlines[task] = stalls_at if end is None else min(stalls_at, end)

    def end(self, task: asyncio.Task[Any]) -> None:
        self._deadlines.pop(task, None)
        self._ends.pop(task, None)

    def message(self, task: asyncio.Task[Any]) -> str:
        """What a read the watch cancelled is told (call before ``expired``)."""
        end = self._ends.get(task)
        if end is not None and task.get_loop().time() >= end:
            return f"request body not received in full within {self.deadline:g} seconds"
        return f"request body not received within {self.timeout:g} seconds"

    def expired(self, task: asyncio.Task[Any]) -> bool:
        if task in self._expired:
            self._expired.discard(task)
            task.uncancel()
            return True
        return False

    async def _sweep(self) -> None:
        interval = min(1.0, self.timeout / 4)
        while self._deadlines:
            await asyncio.sleep(interval)
            now = asyncio.get_running_loop().time()
            for task, deadline in list(self._deadlines.items()):
                if now >= deadline:
                    del self._deadlines[task]
                    self._expired.add(task)
                    task.cancel()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else []

    @classmethod
    def json(cls, payload: object, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
        return cls(status, _encode(payload), [(b"content-type", JSON), *(headers or [])])

    async def send(self, send: Send, extra_headers: list[tuple[bytes, bytes]]) -> None:
        headers = [*self.headers, *extra_headers, (b"content-length", str(len(self.body)).encode())]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


OK_BODY = b'{"status":1}'


def ok() -> Response:
    """PostHog's success: exactly 200 with ``{"status":1}``; SDKs retry any other 2xx."""
    return Response(200, OK_BODY, [(b"content-type", JSON)])


def error(status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    """Hogflare's error shape, which its integrators already parse."""
    return Response.json({"status": 0, "error": message}, status, headers)


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header is ``Bearer <token>``, compared in constant time."""
    scheme, _, credentials = (header or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode())


#: The methods a preflight allows: PostHog's, for every route but the few that take more.
CORS_METHODS = b"GET, POST, OPTIONS"


def cors_headers(request: Request, methods: bytes = CORS_METHODS) -> list[tuple[bytes, bytes]]:
    """Mirror the origin with credentials allowed, as PostHog's capture does, on every response."""
    origin = request.header(b"origin")
    if not origin:
        return []
    headers = [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-credentials", b"true"),
        (b"vary", b"origin"),
    ]
    if request.method == "OPTIONS":
        requested = request.header(b"access-control-request-headers") or "content-type"
        headers += [
            (b"access-control-allow-methods", methods),
            (b"access-control-allow-headers", requested.encode("latin-1")),
            (b"access-control-max-age", b"86400"),
        ]
    return headers
