"""Against a real ``hogflare serve`` process: the CLI, readiness, visibility, workers, shutdown."""

from __future__ import annotations

import csv
import io
import json
import resource
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from hogflare.lake import Lake
from hogflare.query import run
from tests.conftest import TOKEN, event
from tests.helpers.server import HOGFLARE, Server, free_port, query, wait_for_rows

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("server") / "data") as running:
        yield running


def test_rows_are_queryable_within_the_flush_interval_plus_a_second(server: Server) -> None:
    lake = Lake(server.data_dir / "lake")
    body = {"api_key": TOKEN, "batch": [event("visible soon", "visibility-user")]}
    assert httpx.post(f"{server.url}/batch/", json=body).status_code == 200
    acknowledged = time.monotonic()
    while time.monotonic() - acknowledged < 0.3 + 1.0:  # HOGFLARE_FLUSH_INTERVAL_SECS + 1 s
        if run(lake, "select * from events where distinct_id = 'visibility-user'").num_rows:
            break
        time.sleep(0.05)
    else:
        pytest.fail("an acknowledged row was not queryable within the flush interval plus one second")


def test_query_formats(server: Server) -> None:
    body = {"api_key": TOKEN, "batch": [event("format check", "format-user", properties={"a": 1})]}
    httpx.post(f"{server.url}/batch/", json=body)
    wait_for_rows(server.data_dir, "select * from events where distinct_id = 'format-user'", 1)
    sql = "select event, distinct_id, properties from events where distinct_id = 'format-user'"

    def run(fmt: str) -> str:
        args = [HOGFLARE, "query", "--data-dir", str(server.data_dir), "--format", fmt, sql]
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout

    # The server adds the client's address, here the loopback the test connects from.
    properties = '{"a":1,"$ip":"127.0.0.1"}'
    assert json.loads(run("json")) == [
        {"event": "format check", "distinct_id": "format-user", "properties": properties}
    ]
    assert list(csv.reader(io.StringIO(run("csv")))) == [
        ["event", "distinct_id", "properties"],
        ["format check", "format-user", properties],
    ]
    table = run("table")
    assert "format check" in table
    assert "(1 row)" in table
    header, separator = table.splitlines()[:2]
    assert [i for i, c in enumerate(header) if c == "|"] == [i for i, c in enumerate(separator) if c == "+"]

    # Lists and wide sums are written as JSON would, in every format.
    sql = "select distinct_ids, sum(person_int_id) as n from persons where 'format-user' in distinct_ids group by 1"
    [row] = json.loads(run("json"))
    assert row["distinct_ids"] == ["format-user"]
    assert isinstance(row["n"], int)
    assert list(csv.reader(io.StringIO(run("csv"))))[1][0] == '["format-user"]'
    assert '["format-user"]' in run("table")
    sql = "select map {'plan': 'pro'} as m"
    assert json.loads(run("json")) == [{"m": {"plan": "pro"}}]
    assert list(csv.reader(io.StringIO(run("csv")))) == [["m"], ['{"plan":"pro"}']]


def test_query_reports_sql_errors_clearly(server: Server) -> None:
    args = [HOGFLARE, "query", "--data-dir", str(server.data_dir), "select nope from events"]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 1
    assert "nope" in result.stderr


def test_help_is_clear() -> None:
    for args in ([], ["serve"], ["query"], ["compact"]):
        result = subprocess.run([HOGFLARE, *args, "--help"], capture_output=True, text=True, check=True)
        assert "Usage: hogflare" in result.stdout
    assert "--data-dir" in subprocess.run([HOGFLARE, "serve", "--help"], capture_output=True, text=True).stdout


def test_readiness_reports_the_shipper(server: Server) -> None:
    response = httpx.get(f"{server.url}/_readiness")
    assert (response.status_code, response.json()) == (200, {"status": "ready"})


def test_sigterm_ships_everything_before_exit(tmp_path: Path) -> None:
    # A long flush interval: only the shutdown flush can get these rows into the lake in time.
    server = Server(tmp_path / "data", env={"HOGFLARE_FLUSH_INTERVAL_SECS": "3600"}).start()
    body = {"api_key": TOKEN, "batch": [event(f"e{i}", "shutdown-user") for i in range(50)]}
    assert httpx.post(f"{server.url}/batch/", json=body).status_code == 200
    server.stop()
    assert len(query(server.data_dir, "select * from events")) == 50


def test_several_workers_share_one_data_directory(tmp_path: Path) -> None:
    with Server(tmp_path / "data", workers=2) as server, httpx.Client() as client:
        for i in range(100):
            body = {
                "api_key": TOKEN,
                "batch": [event(f"e{i}", f"user-{i % 7}", uuid=f"0190f0f0-0000-7000-8000-{i:012d}")],
            }
            assert client.post(f"{server.url}/batch/", json=body).status_code == 200
        rows = wait_for_rows(server.data_dir, "select distinct uuid from events", 100)
        assert len(rows) == 100


def test_more_clients_than_the_usual_open_files_limit_are_served(tmp_path: Path) -> None:
    """Started under a soft limit of 256 open files (1,024 is the usual one), the server runs
    with the hard limit (Granian raises it as it starts, for the workers and the shipper they
    start), so each of 400 clients connected at once is answered."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == resource.RLIM_INFINITY or hard >= 2048, "the machine's hard limit leaves nothing to raise"
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        server = Server(tmp_path / "data").start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    clients: list[socket.socket] = []
    try:
        clients = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(400)]
        for client in clients:
            client.sendall(b"GET /_health HTTP/1.1\r\nHost: hogflare\r\n\r\n")
        for client in clients:
            assert client.recv(64).startswith(b"HTTP/1.1 200")
    finally:
        for client in clients:
            client.close()
        server.stop()


def test_app_addr_is_honoured(tmp_path: Path) -> None:
    port = free_port()
    server = Server(tmp_path / "data", env={"APP_ADDR": f"127.0.0.1:{port}"})
    server.port = port
    server.url = f"http://127.0.0.1:{port}"
    # Start without --port so APP_ADDR decides.
    server.data_dir.mkdir(parents=True)
    process = subprocess.Popen(
        [HOGFLARE, "serve", "--data-dir", str(server.data_dir)],
        env=server.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server.process = process
    try:
        server.wait_ready(30)
        assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    finally:
        server.stop()


def _read_response(sock: socket.socket, buffered: bytes) -> tuple[int, bytes, bytes]:
    """One HTTP/1.1 response with a ``content-length`` from ``sock``: status, body, and what was
    read past it."""
    while b"\r\n\r\n" not in buffered:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        buffered += chunk
    head, _, rest = buffered.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        rest += chunk
    return int(lines[0].split()[1]), rest[:length], rest[length:]


def test_one_connection_carries_bodies_of_every_framing(server: Server) -> None:
    """Bodies whose length is declared, bodies sent in pieces, chunked bodies, and empty bodies,
    one after another on one keep-alive connection: each is read whole, and the next request on
    the connection is answered."""
    padding = "x" * 200_000  # arrives in several reads
    bodies = [
        json.dumps({"api_key": TOKEN, "batch": [event("framing", "framing-user", properties={"n": n, "pad": pad})]})
        for n, pad in enumerate(["", padding, "", padding])
    ]
    requests = [
        b"POST /batch/ HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body.encode()
        for body in bodies[:2]
    ]
    requests += [
        b"POST /batch/ HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"".join(
            f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for piece in (body[:100].encode(), body[100:].encode())
        )
        + b"0\r\n\r\n"
        for body in bodies[2:]
    ]
    requests.append(b"POST /batch/ HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
    answers = []
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        leftover = b""
        for request in requests:
            for start in range(0, len(request), 65536):
                sock.sendall(request[start : start + 65536])
            status, body, leftover = _read_response(sock, leftover)
            answers.append((status, json.loads(body)))
    assert answers[:4] == [(200, {"status": 1})] * 4
    assert answers[4][0] == 400
    rows = wait_for_rows(server.data_dir, "select properties from events where distinct_id = 'framing-user'", 4)
    pads = sorted((json.loads(row["properties"])["n"], len(json.loads(row["properties"])["pad"])) for row in rows)
    assert pads == [(0, 0), (1, 200_000), (2, 0), (3, 200_000)]


def _h2_post(port: int, body: bytes, declared: int, extra: bytes) -> list[object]:
    """One HTTP/2 stream (prior knowledge) posting ``body`` under ``content-length: declared``,
    then ``extra`` in a second frame that ends the stream; the events the server answers with."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "127.0.0.1"),
        (":path", "/batch/"),
        ("content-type", "application/json"),
        ("content-length", str(declared)),
    ]
    connection.send_headers(1, headers)
    connection.send_data(1, body)
    connection.send_data(1, extra, end_stream=True)
    received: list[object] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(connection.data_to_send())
        while not any(isinstance(e, h2.events.StreamEnded | h2.events.StreamReset) for e in received):
            data = sock.recv(65536)
            if not data:
                break
            received += connection.receive_data(data)
            sock.sendall(connection.data_to_send())
    return received


def test_an_http2_stream_that_breaks_its_content_length_is_not_stored(server: Server) -> None:
    """HTTP/2 checks a stream's length only when its next frame arrives: a stream that sends more
    than it declared is reset, and nothing of it lands; an honest stream beside it does."""

    def body(user: str) -> bytes:
        return json.dumps({"api_key": TOKEN, "batch": [event("h2", user)]}).encode()

    broken = body("h2-broken")
    answer = _h2_post(server.port, broken, len(broken), b"xyz")
    assert any(isinstance(e, h2.events.StreamReset) for e in answer)
    assert not any(isinstance(e, h2.events.ResponseReceived) and (b":status", b"200") in e.headers for e in answer)
    honest = body("h2-honest")
    answer = _h2_post(server.port, honest[:10], len(honest), honest[10:])
    assert any(isinstance(e, h2.events.ResponseReceived) and (b":status", b"200") in e.headers for e in answer)
    wait_for_rows(server.data_dir, "select 1 from events where distinct_id = 'h2-honest'", 1)
    assert query(server.data_dir, "select 1 from events where distinct_id = 'h2-broken'") == []


@pytest.mark.parametrize(
    ("framing", "body"),
    [
        pytest.param(b"transfer-encoding: chunked\r\n", b"zz\r\nabc\r\n0\r\n\r\n", id="a chunk size that is no number"),
        pytest.param(b"content-length: 10\r\n", b"[]", id="fewer bytes than content-length, then a half-close"),
    ],
)
def test_a_body_whose_framing_breaks_is_a_400_that_says_so(server: Server, framing: bytes, body: bytes) -> None:
    """Granian reads a broken body as a disconnect; the client is still there, and a 500 would
    have an SDK send it again and again."""
    request = b"POST /batch/ HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n" + framing + b"\r\n" + body
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        if framing.startswith(b"content-length"):
            sock.shutdown(socket.SHUT_WR)
        status, answer, _ = _read_response(sock, b"")
    assert status == 400
    assert "cut short" in json.loads(answer)["error"]


def test_a_server_starts_while_another_process_holds_the_lake_catalog(tmp_path: Path) -> None:
    """A catalog held by another process (a long write from another tool) delays no start: the
    server listens and takes events, and the lake catches up once the catalog is free."""
    import sqlite3

    data = tmp_path / "data"
    with Server(data) as first:
        assert httpx.post(f"{first.url}/batch/", json={"api_key": TOKEN, "batch": [event("before")]}).is_success
        wait_for_rows(data, "select * from events", 1)
    server = Server(data)
    holder = sqlite3.connect(data / "lake" / "catalog.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        server.start(timeout=30)
        assert httpx.post(f"{server.url}/batch/", json={"api_key": TOKEN, "batch": [event("during")]}).is_success
        holder.execute("ROLLBACK")
        rows = wait_for_rows(data, "select event from events order by event", 2)
        assert [row["event"] for row in rows] == ["before", "during"]
    finally:
        holder.close()
        server.stop()
