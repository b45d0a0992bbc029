"""Hostile requests against a real ``hogflare serve`` while a normal client keeps sending beside them.

Each attack (bombs, deep nesting, invalid UTF-8, huge batches and strings, slow clients, wrong
content types, bad signatures) is sent several times at once and must get its 4xx within its cap;
meanwhile the normal client gets only 200s and its events land in the lake, and nothing the
attacks carried does. The server runs with small caps (1 MB on the wire, 5 MB inflated, a 2 s body
stall) so every attack is cheap to send and quick to refuse; the in-process tests check the caps
at their edges."""

from __future__ import annotations

import functools
import gzip
import hashlib
import hmac
import json
import logging
import select
import socket
import statistics
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.conftest import fixture_bytes
from tests.helpers.load import TOKEN, Load, lake_uuids, wait_until
from tests.helpers.server import Server

pytestmark = [pytest.mark.server, pytest.mark.slow]

log = logging.getLogger(__name__)

SECRET = "whsec_hostile"
MAX_BODY = 1_000_000
BODY_TIMEOUT_SECS = 2
BODY_DEADLINE_SECS = 4
#: ``hogflare serve`` sets Granian's header read timeout to 10 s.
HEADER_TIMEOUT_SECS = 10
COPIES = 3
TOO_BIG = f"request body exceeds the maximum of {MAX_BODY} bytes"
INFLATED = f"payload exceeds the maximum of {MAX_BODY * 5} bytes once decompressed"


def signature(body: bytes) -> dict[str, str]:
    return {"x-posthog-signature": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()}


@dataclass
class Hostile:
    server: Server
    normal: Load


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    env = {
        "POSTHOG_SIGNING_SECRET": SECRET,
        "HOGFLARE_MAX_BODY_BYTES": str(MAX_BODY),
        "HOGFLARE_BODY_TIMEOUT_SECS": str(BODY_TIMEOUT_SECS),
        "HOGFLARE_BODY_DEADLINE_SECS": str(BODY_DEADLINE_SECS),
    }
    with (
        Server(tmp_path_factory.mktemp("hostile") / "data", workers=2, env=env) as server,
        Load(server.url, senders=1, ids=5, batch=5, pause=0.05, sign=signature, event="normal") as normal,
    ):
        yield Hostile(server, normal)


class NormalClient:
    """The normal client's record from the start of one attack: ``check`` asserts it kept being served."""

    def __init__(self, hostile: Hostile) -> None:
        self.load = hostile.normal
        self.data_dir = hostile.server.data_dir
        self.acknowledged = len(self.load.log())
        self.answered = len(self.load.answers())
        self.transport_errors = self.load.transport_errors()

    def check(self) -> None:
        """It got only 200s, went on getting them after the attack, and its events landed; none of the
        attack's did. Its latencies are logged, not asserted."""
        load = self.load
        load.wait_for(lambda load: len(load.log()) >= self.acknowledged + 30, "the normal client served after")
        answers = load.answers()[self.answered :]
        latencies = sorted(answer.seconds * 1000 for answer in answers)
        p50, slowest = statistics.median(latencies), latencies[-1]
        log.info("normal client: %d requests, p50 %.1f ms, slowest %.1f ms", len(latencies), p50, slowest)
        assert {answer.status for answer in answers} == {200}
        assert load.transport_errors() == self.transport_errors
        acknowledged = set(load.log()[self.acknowledged :])
        wait_until(lambda: acknowledged <= lake_uuids(self.data_dir).keys(), "the normal client's events landed", 30)
        assert lake_uuids(self.data_dir, "event = 'hostile'") == {}, "nothing an attack carried landed"


@pytest.fixture
def normal_client(hostile: Hostile) -> NormalClient:
    return NormalClient(hostile)


def item(**properties: Any) -> dict[str, Any]:
    return {"event": "hostile", "distinct_id": "attacker", "properties": properties}


def batch(*items: dict[str, Any]) -> bytes:
    return json.dumps({"api_key": TOKEN, "batch": list(items)}).encode()


def nested(depth: int) -> bytes:
    """A batch whose one event nests ``depth`` arrays deep."""
    head, tail = batch(item(deep="@")).split(b'"@"')
    return head + b"[" * depth + b"]" * depth + tail


@functools.cache
def hundred_thousand_items() -> bytes:
    return batch(*(item(n=n) for n in range(100_000)))


@functools.cache
def ten_mb_string() -> bytes:
    return batch(item(blob="x" * 10_000_000))


@functools.cache
def gzip_bomb() -> bytes:
    return gzip.compress(batch(item(blob="0" * 50_000_000)))


@functools.cache
def gzip_bomb_with_a_forged_size() -> bytes:
    """The gzip trailer's size field claims 100 bytes: only inflating tells the truth."""
    bomb = gzip_bomb()
    return bomb[:-4] + (100).to_bytes(4, "little")


@functools.cache
def deflate_bomb() -> bytes:
    return zlib.compress(batch(item(blob="0" * 50_000_000)))


def multipart(body: bytes) -> bytes:
    return b'--x\r\nContent-Disposition: form-data; name="data"\r\n\r\n' + body + b"\r\n--x--\r\n"


@dataclass(frozen=True)
class Attack:
    """A hostile request and the answer it must get. Unless ``signature`` says otherwise, it is signed
    with the server's secret, so it is the payload, not the signature, that gets refused."""

    path: str
    body: Callable[[], bytes]
    status: int
    error: str
    headers: dict[str, str] = field(default_factory=dict)
    signature: Callable[[bytes], dict[str, str]] = signature
    #: Sent with chunked transfer encoding, without a Content-Length to refuse it by.
    chunked: bool = False


ATTACKS = {
    "gzip bomb": Attack("/i/v0/e/", gzip_bomb, 413, INFLATED),
    "gzip bomb with a forged size": Attack("/i/v0/e/", gzip_bomb_with_a_forged_size, 413, INFLATED),
    "deflate bomb": Attack("/batch/", deflate_bomb, 413, INFLATED, {"content-encoding": "deflate"}),
    "lz64 bomb": Attack(
        "/e/",
        lambda: b"data=" + fixture_bytes("lz64_bomb.txt").strip() + b"&compression=lz64",
        413,
        INFLATED,
        {"content-type": "application/x-www-form-urlencoded"},
    ),
    "10,000-deep nesting": Attack("/batch/", lambda: nested(10_000), 400, "nesting deeper than 256 levels"),
    "invalid utf-8": Attack("/batch/", lambda: batch(item()).replace(b"hostile", b"host\xff\xfeile"), 400, "utf-8"),
    "100,000-item batch": Attack("/batch/", hundred_thousand_items, 413, TOO_BIG),
    "100,000-item batch, gzipped": Attack("/batch/", lambda: gzip.compress(hundred_thousand_items()), 413, INFLATED),
    "10 MB string": Attack("/batch/", ten_mb_string, 413, TOO_BIG),
    "10 MB string, chunked": Attack("/batch/", ten_mb_string, 413, TOO_BIG, chunked=True),
    "10 MB string, gzipped": Attack("/batch/", lambda: gzip.compress(ten_mb_string()), 413, INFLATED),
    "multipart form": Attack(
        "/batch/",
        lambda: multipart(batch(item())),
        400,
        "invalid json",
        {"content-type": "multipart/form-data; boundary=x"},
    ),
    "xml": Attack(
        "/batch/", lambda: b'<event name="hostile"/>', 400, "invalid json", {"content-type": "application/xml"}
    ),
    "png": Attack(
        "/batch/", lambda: b"\x89PNG\r\n\x1a\n" + bytes(range(256)), 400, "utf-8", {"content-type": "image/png"}
    ),
    "form without data": Attack(
        "/e/",
        lambda: b"ver=1&event=hostile",
        400,
        "missing data field",
        {"content-type": "application/x-www-form-urlencoded"},
    ),
    "missing signature": Attack(
        "/batch/", lambda: batch(item()), 401, "missing signature header", signature=lambda _: {}
    ),
    "wrong signature": Attack(
        "/batch/",
        lambda: batch(item()),
        401,
        "signature verification failed",
        signature=lambda _: {"x-posthog-signature": "sha256=" + "0" * 64},
    ),
    "body changed after signing": Attack(
        "/batch/",
        lambda: batch(item(amount=1000)),
        401,
        "signature verification failed",
        signature=lambda _: signature(batch(item(amount=1))),
    ),
}


def send(server: Server, attack: Attack, body: bytes) -> tuple[int, str]:
    headers = {**attack.headers, **attack.signature(body)}
    content: bytes | Iterator[bytes] = body
    if attack.chunked:
        content = (body[start : start + 65_536] for start in range(0, len(body), 65_536))
    response = httpx.post(f"{server.url}{attack.path}", content=content, headers=headers, timeout=30)
    return response.status_code, response.json()["error"]


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_attack_is_refused_while_a_normal_client_is_served(
    hostile: Hostile, normal_client: NormalClient, attack: Attack
) -> None:
    body = attack.body()
    with ThreadPoolExecutor(COPIES) as pool:
        answers = list(pool.map(lambda _: send(hostile.server, attack, body), range(COPIES)))
    for status, error in answers:
        assert status == attack.status, error
        assert attack.error in error
    normal_client.check()


def test_slowloris_headers_are_cut_off_by_granian(hostile: Hostile, normal_client: NormalClient) -> None:
    """Header bytes trickling in never complete a request: Granian's header read timeout closes each
    connection, without an answer, however recently a byte came in."""
    connections = []
    for _ in range(20):
        connection = socket.create_connection(("127.0.0.1", hostile.server.port))
        connection.sendall(b"POST /batch/ HTTP/1.1\r\nHost: hogflare\r\nX-Slow: ")
        connection.setblocking(False)
        connections.append(connection)
    received = dict.fromkeys(connections, b"")
    open_ = set(connections)
    started = time.monotonic()
    while open_ and time.monotonic() - started < 2 * HEADER_TIMEOUT_SECS:
        for connection in list(open_):
            try:
                data = connection.recv(4096)
            except BlockingIOError:
                data = None
            except ConnectionError:
                data = b""
            if data == b"":
                open_.discard(connection)
                continue
            received[connection] += data or b""
            try:
                connection.send(b"x")  # one more byte of the header, never its end
            except ConnectionError:
                open_.discard(connection)
        time.sleep(0.5)
    log.info("slow header connections closed after %.1f s", time.monotonic() - started)
    for connection in connections:
        connection.close()
    assert not open_, f"{len(open_)} slow header connections still open after {2 * HEADER_TIMEOUT_SECS} s"
    assert set(received.values()) == {b""}, "Granian closes the connection without an answer"
    normal_client.check()


def read_answer(connection: socket.socket) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of the one HTTP/1.1 response a connection gets before it is closed."""
    data = b""
    while chunk := connection.recv(65_536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_slowloris_bodies_get_408(hostile: Hostile, normal_client: NormalClient) -> None:
    """A body that stops arriving is refused with 408 once it has stalled for HOGFLARE_BODY_TIMEOUT_SECS."""
    body = batch(item(pad="p" * 1_000))
    connections = []
    for _ in range(10):
        connection = socket.create_connection(("127.0.0.1", hostile.server.port), timeout=5 * BODY_TIMEOUT_SECS)
        head = f"POST /batch/ HTTP/1.1\r\nHost: hogflare\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in signature(body).items())
        connection.sendall(head.encode() + b"\r\n" + body[:100])
        connections.append(connection)
    for connection in connections:
        with connection:
            status, answer = read_answer(connection)
        assert (status, answer["error"]) == (408, f"request body not received within {BODY_TIMEOUT_SECS} seconds")
    normal_client.check()


def test_a_body_trickled_in_forever_gets_408(hostile: Hostile, normal_client: NormalClient) -> None:
    """A byte now and then never stalls a body, but HOGFLARE_BODY_DEADLINE_SECS ends it all the same."""
    body = batch(item())
    with socket.create_connection(("127.0.0.1", hostile.server.port), timeout=5 * BODY_DEADLINE_SECS) as connection:
        head = f"POST /batch/ HTTP/1.1\r\nHost: hogflare\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in signature(body).items())
        connection.sendall(head.encode() + b"\r\n")
        started = time.monotonic()
        sent = 0
        # Well within the stall timeout each time, for longer than the deadline.
        while sent < len(body) - 1 and time.monotonic() - started < 3 * BODY_DEADLINE_SECS:
            try:
                connection.sendall(body[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            time.sleep(BODY_TIMEOUT_SECS / 4)
            if select.select([connection], [], [], 0)[0]:
                break
        status, answer = read_answer(connection)
    assert (status, answer["error"]) == (408, f"request body not received in full within {BODY_DEADLINE_SECS} seconds")
    assert time.monotonic() - started < 2 * BODY_DEADLINE_SECS
    normal_client.check()
