"""A Cloudflare Pipelines stream that misbehaves under steady load, against a real ``hogflare serve``
and a real ``hogflare fake-pipeline``: an outage (503, then 429 with ``Retry-After``, then answers
slower than ``CLOUDFLARE_PIPELINE_TIMEOUT_SECS``) loses nothing and keeps each distinct id's order,
and one long enough to fill the outbox gives 503 with ``Retry-After`` until the server recovers by
itself."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers.load import Load, out_of_order
from tests.helpers.server import Server
from tests.helpers.stream import FakeStream

pytestmark = [pytest.mark.server, pytest.mark.slow]


def stream_env(fake: FakeStream, **extra: str) -> dict[str, str]:
    """The events stream on the fake, as the only sink. Bodies are small enough that each chunk of
    the outbox takes several POSTs, so a failure can come between two bodies of one chunk: resending
    them in any other order than the outbox's would show up as events out of order."""
    return {
        "CLOUDFLARE_PIPELINE_ENDPOINT": f"{fake.url}/",
        "HOGFLARE_SINKS": "pipelines",
        "HOGFLARE_PIPELINE_MAX_BODY_BYTES": "30000",
        "HOGFLARE_FLUSH_INTERVAL_SECS": "0.5",
        **extra,
    }


#: The outage, phase by phase: how the stream behaves, and the count in its stats that shows the
#: sink has met it (how many more failed POSTs, or POSTs at all). Each phase lasts at least
#: PHASE_SECS; as each failed POST doubles the sink's backoff, that keeps the wait for the stream's
#: return short.
PHASE_SECS = 2.0
OUTAGE: list[tuple[str, dict[str, float], str, int]] = [
    ("503", {"fail_rate": 1.0, "status": 503}, "failures", 2),
    ("429 with Retry-After", {"status": 429, "retry_after": 1}, "failures", 1),
    ("answers after the timeout", {"fail_rate": 0.0, "delay": 2.0}, "posts", 1),
]


def test_an_outage_loses_nothing_and_keeps_each_distinct_ids_order(tmp_path: Path, fake: FakeStream) -> None:
    env = stream_env(fake, CLOUDFLARE_PIPELINE_TIMEOUT_SECS="0.5")
    with Server(tmp_path / "data", workers=2, env=env) as server, Load(server.url, senders=4, pause=0.05) as load:
        fake.wait_for_stats(lambda now: now["rows"] >= 200, "rows at the stream before the outage")
        before_outage = len(load.uuids())
        for name, behaviour, counter, count in OUTAGE:
            before, started = fake.stats(), time.monotonic()
            fake.configure(**behaviour)
            fake.wait_for_more(counter, count, before, f"the sink meeting {name}")
            time.sleep(max(0.0, started + PHASE_SECS - time.monotonic()))
        fake.configure(delay=0)
        recovered = len(load.uuids())
        load.wait_for(lambda load: len(load.uuids()) >= recovered + 200, "acknowledgements after the outage")
        load.finish()
        events = fake.wait_for_events(load.uuids())

    statuses = load.statuses()
    assert statuses.keys() == {200}, f"ingestion kept answering 200 through the outage: {dict(statuses)}"
    assert load.given_up() == []
    assert recovered > before_outage, "the load was not steady through the outage"
    wrong = out_of_order(load.acknowledged(), events)
    assert not wrong, f"{len(wrong)} distinct ids out of order (position, events), e.g. {list(wrong.items())[:5]}"
    assert len(load.acknowledged()) == 100, "every distinct id had events acknowledged"


def test_a_full_outbox_answers_503_with_retry_after_then_recovers_by_itself(tmp_path: Path, fake: FakeStream) -> None:
    env = stream_env(fake, HOGFLARE_OUTBOX_MAX_BYTES="200000")
    with Server(tmp_path / "data", env=env) as server:
        assert server.process is not None
        pid = server.process.pid
        with Load(server.url, senders=4) as load:
            load.wait_for(lambda load: load.statuses()[200] >= 20, "200s before the outage")
            fake.configure(fail_rate=1.0, status=503)
            load.wait_for(lambda load: load.statuses()[503] >= 20, "503s once the outbox is full")
            full = load.statuses()[200]
            time.sleep(1.0)
            assert load.statuses()[200] == full, "a full outbox takes nothing more while the stream is down"
            fake.configure(fail_rate=0.0)
            healed = load.statuses()[200]
            load.wait_for(lambda load: load.statuses()[200] >= healed + 20, "200s after the stream came back", 60)
        fake.wait_for_events(load.uuids())
        assert (server.process.pid, server.process.poll()) == (pid, None), "recovered without a restart"

    refusals = [answer for answer in load.answers() if answer.status != 200]
    assert {answer.status for answer in refusals} == {503}, "full is 503, never a 4xx"
    assert all(answer.retry_after and int(answer.retry_after) > 0 for answer in refusals)
    assert load.given_up() == []
