"""Crash while batches are in flight to the Pipelines stream: a real server feeding the lake and a
slow ``hogflare fake-pipeline`` is SIGKILLed (workers and shipper at once) whenever the stream is in
the middle of a POST, and restarted on the same data directory. Afterwards every acknowledged uuid
has reached the stream at least once, still in each distinct id's order, and the lake exactly once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.load import Load, lake_uuids, out_of_order, restart, wait_until
from tests.helpers.server import Server
from tests.helpers.stream import FakeStream

pytestmark = [pytest.mark.server, pytest.mark.slow]

KILLS = 3


def in_flight_after(posts: int) -> Callable[[dict[str, int]], bool]:
    """A POST is being answered, and ``posts`` have been made: a few bodies into this server's run, so
    the kill comes in the middle of a chunk rather than before its first body."""
    return lambda now: now["in_flight"] > 0 and now["posts"] >= posts


def test_sigkill_while_batches_are_in_flight_to_the_stream(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with FakeStream("--delay", "0.3") as fake:
        env = {
            "CLOUDFLARE_PIPELINE_ENDPOINT": f"{fake.url}/",
            "HOGFLARE_SINKS": "lake,pipelines",
            "HOGFLARE_PIPELINE_MAX_BODY_BYTES": "50000",
            "HOGFLARE_FLUSH_INTERVAL_SECS": "0.2",
        }
        server = Server(data_dir, env=env).start()
        try:
            with Load(server.url, senders=3, pause=0.1) as load:
                for _ in range(KILLS):
                    fake.wait_for_stats(in_flight_after(fake.stats()["posts"] + 3), "a POST in flight")
                    server.kill()
                    server = restart(server)
                resumed = len(load.uuids())
                load.wait_for(lambda load: len(load.uuids()) >= resumed + 200, "acknowledgements after the kills")
            fake.configure(delay=0)
            acknowledged = load.uuids()
            events = fake.wait_for_events(acknowledged)
            wait_until(lambda: acknowledged <= lake_uuids(data_dir).keys(), "every acknowledged uuid in the lake", 60)
        finally:
            server.stop()
    lake = lake_uuids(data_dir)

    assert load.given_up() == []
    assert len(acknowledged) > 1000, "the load did not run long enough to mean anything"
    assert acknowledged <= lake.keys()
    assert {uuid: count for uuid, count in lake.items() if count > 1} == {}, "the lake has each row exactly once"
    assert len(events) > len({row["uuid"] for row in events}), "the rows in flight at each kill were sent again"
    assert not out_of_order(load.acknowledged(), events)
