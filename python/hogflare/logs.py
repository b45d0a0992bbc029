"""Structured logs: JSON lines for machines, or readable console lines, on stderr.

Each request gets an id (``X-Request-Id``, kept from the client when it is sane) held in a
context variable for as long as the request is handled, so every line about it carries
``request_id``. Conditions a flood can repeat per
request (dropped items, refused person updates) go through a ``LogSummary``: the first occurrence
at once, then one line per reason per interval with a count and an example, instead of one line
per request.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import itertools
import json
import logging
import os
import re
import sys
import weakref
from dataclasses import dataclass
from typing import Any

import structlog

#: Kept as one list for the life of the process: loggers cache the list they were first used
#: with, so a later ``configure`` (a test's app, after another's) must change it in place.
_PROCESSORS: list[structlog.typing.Processor] = []


def configure(log_format: str = "console", level: str = "info") -> None:
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    _PROCESSORS[:] = [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        renderer,
    ]
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


#: What a client-sent request id may contain; anything else could forge log fields or lines.
_UNSAFE = re.compile(r"[^A-Za-z0-9._:/+=@-]")
_SAFE_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
MAX_REQUEST_ID = 128


class GranianJsonFormatter(logging.Formatter):
    """Granian's own lines (workers starting and stopping, its errors) as JSON lines of the same
    shape as hogflare's, so that with ``HOGFLARE_LOG_FORMAT=json`` every line parses."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "event": record.getMessage(),
            "logger": "granian",
            "level": record.levelname.lower(),
            "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def granian_log_config(log_format: str) -> dict[str, Any] | None:
    """Granian's ``log_dictconfig`` for a log format (``None``: Granian's own lines)."""
    if log_format != "json":
        return None
    formatter = {"()": f"{__name__}.{GranianJsonFormatter.__name__}"}
    return {"formatters": {"generic": formatter, "access": formatter}}


class _RequestIds:
    """Ids unique to a process: a random 64-bit start, counted up (cheaper than a uuid4 each)."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.counter = itertools.count(int.from_bytes(os.urandom(8)) << 32)

    def next(self) -> str:
        return "%024x" % next(self.counter)  # noqa: UP031 - the quickest of the spellings


_ids = _RequestIds()
#: The id of the request being handled; each ASGI request runs in a context of its own.
_current_request: contextvars.ContextVar[str | None] = contextvars.ContextVar("hogflare_request_id", default=None)


def request_id(incoming: str | None) -> str:
    """The id of a request: the client's ``X-Request-Id`` with unsafe characters removed and cut
    to 128 characters, or a new one when it sent none (or nothing usable)."""
    if incoming:
        if _SAFE_ID.fullmatch(incoming):
            return incoming
        cleaned = _UNSAFE.sub("", incoming[: MAX_REQUEST_ID * 4])[:MAX_REQUEST_ID]
        if cleaned:
            return cleaned
    return _ids.next()


def begin_request(incoming: str | None) -> tuple[str, contextvars.Token[str | None]]:
    """Give the request being handled its id (see ``request_id``) until ``end_request``."""
    rid = request_id(incoming)
    return rid, _current_request.set(rid)


def end_request(token: contextvars.Token[str | None]) -> None:
    _current_request.reset(token)


def add_request_id(logger: Any, method: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """Processor: ``request_id`` on every line logged while a request is handled.

    A context variable of hogflare's own rather than ``bind_contextvars``: setting it costs a
    quarter of binding one, and it is set on every request."""
    rid = _current_request.get()
    if rid is not None:
        event.setdefault("request_id", rid)
    return event


@dataclass(slots=True)
class _Tally:
    count: int
    requests: int
    example: dict[str, Any]


_summaries: weakref.WeakSet[LogSummary] = weakref.WeakSet()


class LogSummary:
    """Logs a condition a flood can repeat per request at most twice per key and interval.

    The first occurrence of a key is logged at once, which opens an interval of ``interval``
    seconds for it; what occurs during the interval is counted and logged as one line when it
    ends (which opens the next). Every line has the same fields: the key, ``count`` (items),
    ``requests`` (how many requests had it), ``interval_secs`` and the first request's details
    as ``example_*``. With an interval of 0 every occurrence is logged at once.
    """

    def __init__(self, logger: Any, event: str, key: str, interval: float) -> None:
        self._log = logger
        self._event = event
        self._key = key
        self.interval = interval
        self._open: set[str] = set()
        self._pending: dict[str, _Tally] = {}
        self._timer: asyncio.TimerHandle | None = None
        _summaries.add(self)

    def add(self, key: str, count: int, **example: Any) -> None:
        tally = self._pending.get(key)
        if tally is not None:
            tally.count += count
            tally.requests += 1
            return
        example.setdefault("request_id", _current_request.get())
        if key in self._open:
            self._pending[key] = _Tally(count, 1, example)
            return
        self._write(key, _Tally(count, 1, example))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self.interval > 0:
            self._open.add(key)
            if self._timer is None:
                self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        # An empty context: a summary is about many requests, not the one that happened to open it.
        self._timer = loop.call_later(self.interval, self._interval_ended, loop, context=contextvars.Context())

    def _interval_ended(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        # A key that was quiet for a whole interval is logged at once again when it next occurs.
        self._open = set(self._pending)
        self.flush()
        if self._open and not loop.is_closed():
            self._schedule(loop)

    def flush(self) -> None:
        """Log what was counted since the last line of each key."""
        pending, self._pending = self._pending, {}
        for key, tally in pending.items():
            self._write(key, tally)

    def _write(self, key: str, tally: _Tally) -> None:
        self._log.warning(
            self._event,
            **{self._key: key},
            count=tally.count,
            requests=tally.requests,
            interval_secs=self.interval,
            **{f"example_{name}": value for name, value in tally.example.items()},
        )


def flush_summaries() -> None:
    """Write what every summary has counted so far (on shutdown)."""
    for summary in list(_summaries):
        summary.flush()
