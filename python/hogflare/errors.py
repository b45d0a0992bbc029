"""hogflare's errors and the HTTP status each one means.

    HogflareError
    ├── PayloadError              400  the body is not a PostHog payload
    │   ├── PayloadTooLargeError  413  bigger than we accept, on the wire or once inflated, or
    │   │                              every event of the request over the event size limit
    │   └── NoValidEventError     400  every event of the request was dropped
    ├── AuthError                 401  project token missing, refused, or inconsistent; bad signature
    ├── RequestTimeoutError       408  the client stopped sending its body
    └── StorageError              503  the store cannot take events now; retry
        └── OutboxFullError       503  rows wait for delivery past the high-water mark

The classes raised by the Rust core are defined there and re-exported here, so ``except`` works
the same on both sides. ``status_for`` is the only place an error becomes a status code. Anything
that is not a ``HogflareError`` is a bug, and the app answers it with a 500.
"""

from __future__ import annotations

from hogflare._hogflare import (
    AuthError,
    HogflareError,
    NoValidEventError,
    OutboxFullError,
    PayloadError,
    PayloadTooLargeError,
    StorageError,
)

__all__ = [
    "AuthError",
    "HogflareError",
    "NoValidEventError",
    "OutboxFullError",
    "PayloadError",
    "PayloadTooLargeError",
    "RequestTimeoutError",
    "StorageError",
    "status_for",
]


class RequestTimeoutError(HogflareError):
    """The client stopped sending the request body (408)."""


_STATUS: tuple[tuple[type[HogflareError], int], ...] = (
    (PayloadTooLargeError, 413),
    (PayloadError, 400),
    (AuthError, 401),
    (RequestTimeoutError, 408),
    (StorageError, 503),
)


def status_for(error: HogflareError) -> int:
    """The HTTP status for an error; a subclass without an entry is server trouble (503)."""
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return 503
