"""The Cloudflare Pipelines sink: the outbox, as Hogflare's stream rows, POSTed to its streams.

Rows go out in JSON arrays of at most ``HOGFLARE_PIPELINE_MAX_BODY_BYTES`` (Cloudflare takes 1 MB
per request), person snapshots before events, as Hogflare sends them. Each chunk's bodies come in
lanes (a distinct id's rows, or a person's snapshots, all in one lane): the lanes are POSTed side by
side, ``HOGFLARE_PIPELINE_CONCURRENCY`` at most, each lane's bodies one after another, so a stream
far away is not paid for one round trip at a time and each distinct id's rows (each person's
snapshots) still arrive in order. The
sink keeps its own outbox cursor and moves it only once every body of a chunk was accepted, so a
crash resends (at least once) and an outage leaves the rows in the outbox; after a failure only
the bodies not yet accepted are sent again. A timeout, a connection error, 429 or 5xx is
retried later with exponential backoff and jitter (``Retry-After`` honoured); any other 4xx means
the configuration is wrong (endpoint, token, schema): it is logged loudly and the sink parks,
trying again only every few minutes, without dropping anything. The one exception is a row larger
than ``HOGFLARE_PIPELINE_MAX_BODY_BYTES`` on its own, sent alone: refused with 413, no retry can
deliver it, so it is logged with its uuid, counted and left out of the stream (the lake, when
enabled, has it) rather than holding back every row after it until the outbox fills.
"""

from __future__ import annotations

import email.utils
import random
import ssl
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import msgspec
import structlog

from hogflare._hogflare import Store
from hogflare.config import Settings
from hogflare.metrics import SinkCounters

log = structlog.get_logger("hogflare.pipelines")

PIPELINES_CURSOR = "pipelines"
#: Largest chunk of the outbox read at once; its bodies are held in memory until delivered.
_MAX_CHUNK_BYTES = 16 << 20
_BACKOFF_FIRST_SECS = 0.5
_BACKOFF_MAX_SECS = 30.0
#: A stream that keeps answering after the request timeout gets each timed-out chunk again, and
#: may have taken it every time: after each timeout the next attempts wait twice as long, up to
#: this many times the configured timeout, until a chunk goes through.
_TIMEOUT_GROWTH_MAX = 8
_RETRY_AFTER_MAX_SECS = 300.0
PARK_SECS = 300.0
_RETRIED = frozenset({408, 429})


class RetryLaterError(Exception):
    """The stream could not take the rows now; try again after a while."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineError(RetryLaterError):
    """The shutdown deadline passed before the body was sent; it is sent after the next start."""


class TimedOutError(RetryLaterError):
    """The stream did not answer in time; it may have taken the body all the same."""


class RefusedError(Exception):
    """The stream refused the rows in a way retrying will not fix (a 4xx other than 429)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _RowId(msgspec.Struct):
    uuid: str | None = None


@dataclass(frozen=True, slots=True)
class Stream:
    name: str
    url: str
    token: str | None


def retry_after_secs(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds to wait: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class PipelinesSink:
    """Ships the outbox to the events stream (and the persons stream when one is configured).

    ``ship_once`` never sleeps: when the stream must be left alone for a while, it returns 0 and
    ``due`` says when to call again, so the lake keeps shipping meanwhile.
    """

    def __init__(self, settings: Settings, store: Store) -> None:
        if not settings.pipeline_endpoint:
            raise ValueError("the Pipelines sink needs CLOUDFLARE_PIPELINE_ENDPOINT")
        self.settings = settings
        self.store = store
        self.events = Stream("events", settings.pipeline_endpoint, settings.pipeline_auth_token)
        self.persons = (
            Stream(
                "persons",
                settings.persons_pipeline_endpoint,
                settings.persons_pipeline_auth_token or settings.pipeline_auth_token,
            )
            if settings.persons_pipeline_endpoint
            else None
        )
        self._lanes = settings.pipeline_concurrency
        # One client per lane: each lane keeps its own connection, and no client is shared
        # between threads.
        self._clients: list[httpx.Client | None] = [None] * self._lanes
        self._pool: ThreadPoolExecutor | None = None
        # Built once: loading the CA bundle costs more than a POST, and clients come and go.
        self._tls: ssl.SSLContext | None = None
        #: What the current chunk still has to send: per stream (persons first), its lanes.
        self._pending: deque[tuple[Stream, list[deque[bytes]]]] = deque()
        self._pending_seq: int | None = None
        #: On shutdown: no POST starts after this ``time.monotonic()``, so the last delivery ends
        #: within one request timeout of the deadline, however many bodies each lane holds.
        self.send_by: float | None = None
        self._pending_positions = 0
        self._pending_rows = 0
        self._next_attempt = 0.0
        self._failures = 0
        self._timeout = settings.pipeline_timeout_secs
        self.parked = False
        self.rows_sent = 0
        self.batches_sent = 0
        #: Rows no request to the stream can carry, left out of it (see ``_leave_out``).
        self.rows_left_out = 0
        self._pending_left_out = 0
        self._left_out_lock = threading.Lock()
        self.retries = 0
        self._counted = SinkCounters(PIPELINES_CURSOR)
        self._counted.parked(False)

    @property
    def position(self) -> int:
        """The last outbox entry the streams have."""
        return self.store.cursor(PIPELINES_CURSOR) or 0

    def due(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self._next_attempt

    def ship_once(self) -> int:
        """Send one chunk of the outbox; returns the outbox positions delivered, one per row (0 when waiting)."""
        if not self.due():
            return 0
        if self._pending_seq is None:
            chunk = self.store.pipeline(
                self.position,
                max_rows=self.settings.flush_rows,
                max_bytes=_MAX_CHUNK_BYTES,
                max_body_bytes=self.settings.pipeline_max_body_bytes,
                lanes=self._lanes,
                persons=self.persons is not None,
            )
            if chunk.positions == 0:
                self.close()  # idle: no connection left open between flushes
                return 0
            if chunk.oversized:
                log.warning(
                    "rows bigger than a Pipelines request; each is sent alone, and left out if refused (413)",
                    rows=chunk.oversized,
                    limit=self.settings.pipeline_max_body_bytes,
                )
            if self.persons is not None and chunk.persons:
                self._pending.append((self.persons, [deque(lane) for lane in chunk.persons]))
            if chunk.events:
                self._pending.append((self.events, [deque(lane) for lane in chunk.events]))
            self._pending_seq = chunk.last_seq
            self._pending_positions = chunk.positions
            self._pending_rows = chunk.event_rows + chunk.person_rows
        while self._pending:
            stream, lanes = self._pending[0]
            failure = self._send(stream, lanes)
            if isinstance(failure, RefusedError):
                self.close()
                self._park(failure)
                return 0
            if isinstance(failure, DeadlineError):
                return 0
            if failure is not None:
                self.close()
                self._wait(failure)
                return 0
            self._pending.popleft()
        self.store.set_cursor(PIPELINES_CURSOR, self._pending_seq)
        self._pending_seq = None
        delivered = self._pending_rows - self._pending_left_out
        self._pending_left_out = 0
        self.rows_sent += delivered
        self._counted.rows.inc(delivered)
        if self._failures or self.parked:
            log.info("Pipelines stream accepting rows again", after_failures=self._failures)
            self._counted.parked(False)
        self._failures = 0
        self._timeout = self.settings.pipeline_timeout_secs
        self.parked = False
        return int(self._pending_positions)

    def _send(self, stream: Stream, lanes: list[deque[bytes]]) -> RetryLaterError | RefusedError | None:
        """POST the lanes side by side; a lane stops at its first failure, the others go on. Returns
        the failure that decides what happens next (a refusal over a retry), or ``None``."""
        before = sum(map(len, lanes))
        if len(lanes) == 1:
            failures = [self._send_lane(0, stream, lanes[0])]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._lanes, thread_name_prefix="pipelines")
            failures = list(self._pool.map(self._send_lane, range(len(lanes)), [stream] * len(lanes), lanes))
        sent = before - sum(map(len, lanes))
        self.batches_sent += sent
        self._counted.batches.inc(sent)
        lanes[:] = [lane for lane in lanes if lane]
        refused = [failure for failure in failures if isinstance(failure, RefusedError)]
        retried = [failure for failure in failures if isinstance(failure, RetryLaterError)]
        if refused:
            return refused[0]
        if retried:
            # A real failure decides the backoff; the deadline only says to stop.
            return max(
                retried, key=lambda failure: (not isinstance(failure, DeadlineError), failure.retry_after or 0.0)
            )
        return None

    def _send_lane(self, index: int, stream: Stream, bodies: deque[bytes]) -> RetryLaterError | RefusedError | None:
        """POST one lane's bodies in order, forgetting each once accepted. Never raises: a lane
        that raised would leave the others running while the chunk is tried again, and two
        threads would then send from the same lane."""
        while bodies:
            if self.send_by is not None and time.monotonic() >= self.send_by:
                return DeadlineError("the shutdown deadline passed")
            try:
                self._post(index, stream, bodies[0])
            except RefusedError as failure:
                if failure.status != 413 or len(bodies[0]) <= self.settings.pipeline_max_body_bytes:
                    return failure
                self._leave_out(stream, bodies[0])
            except RetryLaterError as failure:
                return failure
            except Exception as exc:
                # Anything else (a broken response, a bad URL) is retried like an outage.
                return RetryLaterError(f"{stream.name} stream: {exc!r}")
            bodies.popleft()
        return None

    def _post(self, index: int, stream: Stream, body: bytes) -> None:
        headers = {"content-type": "application/json"}
        if stream.token:
            headers["authorization"] = f"Bearer {stream.token}"
        try:
            client = self._clients[index]
            if client is None:
                if self._tls is None:
                    self._tls = httpx.create_ssl_context()
                client = self._clients[index] = httpx.Client(timeout=self._timeout, verify=self._tls)
            response = client.post(stream.url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise TimedOutError(f"{stream.name} stream did not answer in {self._timeout:g} s: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise RetryLaterError(f"{stream.name} stream unreachable: {exc!r}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        detail = f"{stream.name} stream answered {status}: {response.text[:500]}"
        if status in _RETRIED or status >= 500:
            raise RetryLaterError(detail, retry_after_secs(response.headers.get("retry-after")))
        raise RefusedError(detail, status)

    def _leave_out(self, stream: Stream, body: bytes) -> None:
        """A body of one row too large for any request the stream takes (the rows are packed
        up to ``HOGFLARE_PIPELINE_MAX_BODY_BYTES``, and only a row larger on its own goes
        alone): it is not sent again."""
        try:
            uuids = [row.uuid for row in msgspec.json.decode(body, type=list[_RowId])]
        except msgspec.DecodeError:
            uuids = []
        rows = max(1, len(uuids))
        with self._left_out_lock:  # lanes run on threads of their own
            self.rows_left_out += rows
            self._pending_left_out += rows
        self._counted.refused.inc(rows)
        log.error(
            "a row larger than any request the stream takes is left out of it (the lake, if enabled, has it)",
            stream=stream.name,
            bytes=len(body),
            uuids=uuids,
        )

    def _wait(self, exc: RetryLaterError) -> None:
        if isinstance(exc, TimedOutError):
            # Clients are made anew after a failure, with the longer timeout.
            self._timeout = min(self._timeout * 2, self.settings.pipeline_timeout_secs * _TIMEOUT_GROWTH_MAX)
        self._failures += 1
        self.retries += 1
        self._counted.retries.inc()
        backoff = min(_BACKOFF_MAX_SECS, _BACKOFF_FIRST_SECS * 2 ** (self._failures - 1))
        delay = random.uniform(backoff / 2, backoff)  # noqa: S311 - jitter, not secrets
        if exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, _RETRY_AFTER_MAX_SECS))
        self._next_attempt = time.monotonic() + delay
        log.warning("Pipelines delivery failed; rows stay in the outbox", error=str(exc), retry_in_secs=round(delay, 2))

    def _park(self, exc: RefusedError) -> None:
        self.parked = True
        self._counted.parked(True)
        self._next_attempt = time.monotonic() + PARK_SECS
        log.error(
            "PIPELINES SINK PARKED: the stream refused rows; check CLOUDFLARE_PIPELINE_ENDPOINT, the auth "
            "tokens and the stream schema. Rows stay in the outbox and are retried later.",
            error=str(exc),
            retry_in_secs=PARK_SECS,
        )

    def close(self) -> None:
        """Close the connections (the sink reopens them when it next sends)."""
        for index, client in enumerate(self._clients):
            if client is not None:
                client.close()
                self._clients[index] = None

    def shutdown(self) -> None:
        """Close the connections and stop the lane threads."""
        self.close()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
