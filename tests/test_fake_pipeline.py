"""``hogflare fake-pipeline``'s app, in process: what a Pipelines stream answers, and its failure modes."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import AsyncIterator

import httpx
import pytest

from hogflare.fake_pipeline import FakePipeline
from tests.helpers.server import HOGFLARE


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakePipeline, httpx.AsyncClient]]:
    app = FakePipeline()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://stream.test") as client:
        yield app, client


async def test_rows_are_stored_and_read_back(fake: tuple[FakePipeline, httpx.AsyncClient]) -> None:
    _, client = fake
    assert (await client.get("/health")).json() == {"status": "ok"}
    assert (await client.post("/", json=[{"a": 1}, {"b": {"c": [1, None]}}])).json() == {"status": "ok"}
    assert (await client.post("/", json=[])).status_code == 200
    assert (await client.post("/persons", json=[{"operation": "identify"}])).status_code == 200
    assert (await client.get("/events")).json() == [{"a": 1}, {"b": {"c": [1, None]}}, {"operation": "identify"}]
    assert (await client.post("/reset")).status_code == 200
    assert (await client.get("/events")).json() == []


@pytest.mark.parametrize("body", [b"{}", b"[1]", b"not json", b'{"a": 1}'])
async def test_only_arrays_of_objects_are_accepted(fake: tuple[FakePipeline, httpx.AsyncClient], body: bytes) -> None:
    _, client = fake
    assert (await client.post("/", content=body)).status_code == 400


async def test_the_bearer_token_is_checked(fake: tuple[FakePipeline, httpx.AsyncClient]) -> None:
    app, client = fake
    app.configure({"token": "secret"})
    assert (await client.post("/", json=[{"a": 1}])).status_code == 401
    assert (await client.post("/", json=[{"a": 1}], headers={"authorization": "Bearer nope"})).status_code == 401
    assert (await client.post("/", json=[{"a": 1}], headers={"authorization": "Bearer secret"})).status_code == 200
    assert (await client.get("/health")).status_code == 200


async def test_failures_on_request(fake: tuple[FakePipeline, httpx.AsyncClient]) -> None:
    app, client = fake
    app.configure({"fail_rate": 1.0, "status": 429, "retry_after": 2})
    busy = await client.post("/", json=[{"a": 1}])
    assert busy.status_code == 429
    assert busy.headers["retry-after"] == "2"
    app.configure({"status": 503})
    assert (await client.post("/", json=[{"a": 1}])).status_code == 503
    app.configure({"fail_rate": 0.0})
    assert (await client.post("/", json=[{"a": 1}])).status_code == 200
    stats = {"rows": 1, "posts": 3, "failures": 2, "in_flight": 0, "max_in_flight": 1, "max_body_bytes": 9}
    assert (await client.get("/stats")).json() == stats
    assert (await client.get("/events")).json() == [{"a": 1}]


async def test_discarding_counts_rows_but_keeps_none() -> None:
    app = FakePipeline(discard=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fake") as client:
        assert (await client.post("/", json=[{"a": 1}, {"a": 2}])).status_code == 200
        assert (await client.post("/", content=b"[1]")).status_code == 400
        assert (await client.get("/stats")).json()["rows"] == 2
        assert (await client.get("/events")).json() == []


@pytest.mark.parametrize("port", ["70000", "0"])
def test_a_port_out_of_range_is_refused_plainly(port: str) -> None:
    result = subprocess.run([HOGFLARE, "fake-pipeline", "--port", port], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--port" in result.stderr


def test_a_port_another_process_listens_on_is_refused() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [HOGFLARE, "fake-pipeline", "--port", str(port)], capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
