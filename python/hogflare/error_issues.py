"""``PATCH|POST /errors/api/issues/<fingerprint>/status``: Hogflare's error-issue status change.

An operator, or a tool acting for one, marks an error-tracking issue (the fingerprint of its
``$exception`` events) active, resolved or ignored. The change lands as a ``$error_issue_status``
row that hogflare writes itself: its ``source`` is ``hogflare``, so a model can trust it where it
ignores the same event sent by a client (whose rows say ``posthog``). The route answers only with
``HOGFLARE_ERROR_ADMIN_TOKEN`` (or, as Hogflare had it, ``PERSON_DEBUG_TOKEN``) set, and only to
that token.
"""

from __future__ import annotations

from urllib.parse import unquote

import msgspec

from hogflare.capture import CaptureService
from hogflare.config import Settings
from hogflare.debug import debug_token_matches
from hogflare.http import Request, Response, StallWatch, bearer_matches, error, ok

PREFIX = "/errors/api/issues/"
#: A browser's preflight must hear PATCH, Hogflare's method for this route.
CORS_METHODS = b"POST, PATCH, OPTIONS"
#: The event a status change is stored as, and its distinct id before the fingerprint.
EVENT = "$error_issue_status"
DISTINCT_ID_PREFIX = "hogflare:error_issue:"
STATUSES = ("active", "resolved", "ignored")
#: A status change is a few short strings; anything larger is not one.
_MAX_BODY_BYTES = 64 * 1024


class StatusChange(msgspec.Struct, forbid_unknown_fields=False):
    status: str
    api_key: str = ""
    actor: str | None = None
    reason: str | None = None


_decode = msgspec.json.Decoder(StatusChange).decode


def is_status_path(path: str) -> bool:
    return path.startswith(PREFIX) and path.rstrip("/").endswith("/status")


def fingerprint_of(raw_path: str) -> str | None:
    """The fingerprint a status path names (its escapes decoded: a fingerprint may hold ``/``),
    from the path as sent; ``None`` for another path."""
    if not raw_path.startswith(PREFIX):
        return None
    fingerprint, slash, status = raw_path.rstrip("/").removeprefix(PREFIX).rpartition("/")
    if not slash or status != "status" or "/" in fingerprint:
        return None
    return unquote(fingerprint)


async def change_status(
    settings: Settings, capture: CaptureService, watch: StallWatch, request: Request, fingerprint: str
) -> Response:
    if request.method not in {"PATCH", "POST"}:
        return error(405, "method not allowed")
    expected = settings.error_admin_token or settings.person_debug_token
    if not expected:
        return error(401, "error tracking status updates are disabled")
    if not _token_matches(request, expected):
        return error(401, "invalid error tracking admin token")
    fingerprint = fingerprint.strip()
    if not fingerprint:
        return error(400, "the issue fingerprint is empty")
    body = await request.body(_MAX_BODY_BYTES, watch)
    try:
        change = _decode(body)
    except msgspec.DecodeError as exc:
        return error(400, f"invalid status change: {exc}")
    status = change.status.strip().lower()
    if status not in STATUSES:
        return error(400, f"unsupported error issue status {status} (one of {', '.join(STATUSES)})")
    if not change.api_key.strip():
        return error(400, "api_key (the project token) is required")
    properties = {"fingerprint": fingerprint, "status": status}
    for key, value in (("actor", change.actor), ("reason", change.reason)):
        if value is not None and value.strip():
            properties[key] = value.strip()
    await capture.store_own_event(request, change.api_key, EVENT, DISTINCT_ID_PREFIX + fingerprint, properties)
    return ok()


def _token_matches(request: Request, expected: str) -> bool:
    """Hogflare's header, or the ``Authorization: Bearer`` most API clients send."""
    return debug_token_matches(request, expected) or bearer_matches(request.header(b"authorization"), expected.strip())
