"""Graceful shutdown of a real server: SIGTERM stops new connections, finishes the requests in
flight, and ships what the outbox holds within ``HOGFLARE_SHUTDOWN_TIMEOUT_SECS``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from hogflare import app as app_module
from hogflare.app import App
from hogflare.config import Settings
from hogflare.supervisor import PARENT_ENV, shipper_alive, spawn
from tests.conftest import TOKEN, event
from tests.helpers.server import Server, query

pytestmark = pytest.mark.timeout(180)

#: The shipper only ships when told to stop: every row shipped was shipped by the final flush.
NO_BACKGROUND_SHIPPING = {"HOGFLARE_FLUSH_INTERVAL_SECS": "3600", "HOGFLARE_FLUSH_ROWS": "1000000"}


def batch_body(uuids: list[str]) -> bytes:
    batch = [{"event": "shutdown test", "distinct_id": f"user-{n % 7}", "uuid": u} for n, u in enumerate(uuids)]
    return json.dumps({"api_key": "phc_shutdown", "batch": batch}).encode()


def send_batches(server: Server, count: int, size: int = 100) -> list[str]:
    acknowledged: list[str] = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(count):
            uuids = [str(uuid.uuid4()) for _ in range(size)]
            response = client.post("/batch", content=batch_body(uuids), headers={"content-type": "application/json"})
            assert response.status_code == 200, response.text
            acknowledged += uuids
    return acknowledged


def lake_uuids(data_dir: Path) -> list[str]:
    return [row["uuid"] for row in query(data_dir, "select uuid from events")]


def test_sigterm_finishes_the_request_in_flight_and_ships_it(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", env=NO_BACKGROUND_SHIPPING).start()
    assert server.process is not None
    acknowledged = send_batches(server, 3)
    in_flight = str(uuid.uuid4())
    body = batch_body([in_flight])
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        head = "POST /batch HTTP/1.1\r\nHost: hogflare\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(body)}"
        connection.sendall(f"{head}\r\n\r\n".encode() + body[:20])
        time.sleep(0.3)  # the request is being read when the signal comes
        server.process.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/_health", timeout=2)
        connection.sendall(body[20:])
        status_line = connection.recv(4096).split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 200 OK"
    assert server.process.wait(120) == 0
    landed = lake_uuids(server.data_dir)
    assert sorted(landed) == sorted([*acknowledged, in_flight])


def test_rows_left_at_the_deadline_ship_after_the_next_start(tmp_path: Path) -> None:
    env = {**NO_BACKGROUND_SHIPPING, "HOGFLARE_SHUTDOWN_TIMEOUT_SECS": "0"}
    server = Server(tmp_path / "data", env=env).start()
    acknowledged = send_batches(server, 5)
    server.stop(timeout=120)
    assert server.process is not None
    assert server.process.returncode == 0
    assert "shutdown deadline reached" in server.log()
    assert lake_uuids(server.data_dir) == []

    with Server(tmp_path / "data", env=NO_BACKGROUND_SHIPPING):
        pass  # a plain start and stop: its final flush has time enough
    landed = lake_uuids(tmp_path / "data")
    assert len(landed) == len(acknowledged)
    assert set(landed) == set(acknowledged)


def test_a_burst_of_signals_still_stops_the_shipper(tmp_path: Path) -> None:
    # A shipper is told to stop by the worker that started it and by a signal to its process group,
    # often at the same moment: however many arrive, it stops, and its data directory is free.
    settings = Settings.from_env({}, data_dir=tmp_path / "data")
    shipper = spawn(settings)
    deadline = time.monotonic() + 30
    while not shipper_alive(settings):
        assert shipper.poll() is None, "the shipper exited on its own"
        assert time.monotonic() < deadline, "the shipper did not start"
        time.sleep(0.05)
    time.sleep(1.0)  # past its start-up, into its loops
    until = time.monotonic() + 2.0
    while time.monotonic() < until and shipper.poll() is None:
        shipper.send_signal(signal.SIGTERM)
    # Zero, or killed by a signal that came after its handler was gone, on the way out.
    assert shipper.wait(timeout=30) in {0, -signal.SIGTERM}
    assert not shipper_alive(settings)


def test_a_shipper_started_by_hand_outlives_the_shell_that_started_it(tmp_path: Path) -> None:
    # `hogflare ship` run from a script or a unit's wrapper that then exits must keep shipping:
    # only a shipper a server's worker started follows its parent out.
    settings = Settings.from_env({}, data_dir=tmp_path / "data")
    env = {key: value for key, value in {**os.environ, **settings.to_env()}.items() if key != PARENT_ENV}
    launch = f"{sys.executable} -m hogflare ship > /dev/null 2>&1 & echo $!; sleep 2"
    pid = int(subprocess.run(["sh", "-c", launch], env=env, capture_output=True, text=True, check=True).stdout)
    try:
        deadline = time.monotonic() + 30
        while not shipper_alive(settings):
            assert time.monotonic() < deadline, "the shipper did not start"
            time.sleep(0.05)
        time.sleep(1.0)  # ten turns of its watch, with the shell long gone
        assert shipper_alive(settings), "the shipper left with the shell that started it"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while shipper_alive(settings):
        assert time.monotonic() < deadline, "the shipper did not stop on SIGTERM"
        time.sleep(0.05)


def test_a_second_shipper_leaves_before_loading_anything(tmp_path: Path) -> None:
    # Each worker of a starting server launches a shipper; those that are not needed must exit
    # at once, not after seconds of imports that take the CPU from the workers.
    settings = Settings.from_env({}, data_dir=tmp_path / "data")
    first = spawn(settings)
    try:
        deadline = time.monotonic() + 30
        while not shipper_alive(settings):
            assert first.poll() is None, "the shipper exited on its own"
            assert time.monotonic() < deadline, "the shipper did not start"
            time.sleep(0.05)
        second = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "hogflare", "ship"],
            env={**os.environ, **settings.to_env()},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 0
        assert "another shipper is running or starting" in second.stdout + second.stderr
        imported = {line.rsplit("|", 1)[-1].strip() for line in second.stderr.splitlines() if "|" in line}
        assert not imported & {"pyiceberg", "pyarrow", "duckdb", "hogflare.shipper", "hogflare.shipper_process"}
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)


def test_a_shipper_whose_worker_died_before_it_started_exits(tmp_path: Path) -> None:
    """A worker that fails its startup just after launching a shipper is gone before the shipper
    can ask for its parent; the shipper must not be left behind under init with the settings of
    a server that no longer runs."""
    settings = Settings.from_env({}, data_dir=tmp_path / "data")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    env = {**os.environ, **settings.to_env(), PARENT_ENV: gone.stdout.strip()}
    shipper = subprocess.Popen([sys.executable, "-m", "hogflare", "ship"], env=env)
    try:
        assert shipper.wait(timeout=60) == 0
    finally:
        shipper.kill()
    assert not shipper_alive(settings)


def test_a_worker_whose_startup_fails_starts_no_shipper(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=tmp_path / "data")
    app = App(settings)

    async def start() -> None:
        with pytest.raises(RuntimeError, match="the flags service failed"):
            await app.startup()

    def failing(*_: object, **__: object) -> None:
        raise RuntimeError("the flags service failed")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app_module, "FlagsService", failing)
        asyncio.run(start())
    assert app._supervisor is None
    time.sleep(1.5)
    assert not shipper_alive(settings)


#: A worker's lifespan (startup, then shutdown), followed by a thread that never ends when asked.
_WORKER_AFTER_LIFESPAN = """
import asyncio, sys, threading
from pathlib import Path
from hogflare.app import App
from hogflare.config import Settings

app = App(Settings.from_env({}, data_dir=Path(sys.argv[1])))
messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

async def receive():
    return next(messages)

async def send(message):
    print(message["type"], flush=True)

asyncio.run(app({"type": "lifespan"}, receive, send))
if sys.argv[2] == "hang":
    # As the interpreter would at exit: join a thread that is stuck.
    threading.Thread(target=threading.Event().wait, name="stuck-after-lifespan").start()
"""


@pytest.mark.parametrize("after", ["hang", "exit"])
def test_a_worker_stuck_after_its_lifespan_dumps_its_stacks(tmp_path: Path, after: str) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _WORKER_AFTER_LIFESPAN, str(tmp_path / "data"), after],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as worker:
        assert worker.stdout is not None
        assert worker.stderr is not None
        try:
            if after == "hang":
                # Read until the dump starts; the test's timeout fails it if none ever comes.
                stderr = ""
                while "Timeout (0:00:05)!" not in stderr:
                    stderr += worker.stderr.readline()
                time.sleep(0.5)
                assert worker.poll() is None
                worker.kill()
                worker.wait(timeout=60)
                stdout, stderr = worker.stdout.read(), stderr + worker.stderr.read()
            else:
                stdout, stderr = worker.communicate(timeout=60)
        finally:
            worker.kill()
    lifespan = [line for line in stdout.split() if line.startswith("lifespan.")]
    assert lifespan == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    if after == "hang":
        # The rest of the dump: every thread's stack, the stuck one's wait among them.
        assert "most recent call first" in stderr
        assert "in wait" in stderr
    else:
        assert "Timeout (" not in stderr
        assert worker.returncode == 0


def test_workers_stop_when_the_server_process_is_killed(tmp_path: Path) -> None:
    """The main process killed outright (SIGKILL, the OOM killer) leaves no workers serving on the
    port: they stop as on SIGTERM, their rows reach the lake, and a server started again listens."""
    data = tmp_path / "data"
    server = Server(data).start()
    try:
        body = {"api_key": TOKEN, "batch": [event("before the kill")]}
        assert httpx.post(f"{server.url}/batch/", json=body).status_code == 200
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        assert server.group_gone(60), "the workers outlived the server's main process"
        assert [row["event"] for row in query(data, "select event from events")] == ["before the kill"]
        again = Server(data)
        again.port, again.url = server.port, server.url
        with again:
            assert httpx.get(f"{again.url}/_health").status_code == 200
    finally:
        server.kill()


def test_an_app_that_is_no_worker_of_the_named_server_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's pid in the environment of a process it did not start (a shell that inherited
    it, an app served another way) stops nothing while that server lives."""
    from hogflare.supervisor import SERVER_ENV, stop_when_orphaned

    monkeypatch.setenv(SERVER_ENV, str(os.getpid()))  # alive, and not this process's parent
    stop_when_orphaned()
    monkeypatch.setenv(SERVER_ENV, "not a pid")
    stop_when_orphaned()
    assert not [thread for thread in threading.enumerate() if thread.name == "orphan-watch"]
