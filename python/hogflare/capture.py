"""The capture routes: PostHog's (``/e``, ``/i/v0/e``, ``/batch``, ``/capture``, ``/track``,
``/engage``, ``/s``, and capture v1's ``/i/v1/analytics/events``) and Hogflare's (``/identify``,
``/alias``, ``/groups``).

Each request crosses into Rust once to be decoded, then waits for the group commit that makes it
durable; only then does it get its 200.
"""

from __future__ import annotations

import asyncio

import msgspec
import structlog

from hogflare import metrics
from hogflare._hogflare import Batch, Decoder, NoValidEventError
from hogflare.commit import GroupCommitter
from hogflare.config import ConfigError, Settings
from hogflare.enrichment import ClientAddress, geoip_databases, request_facts
from hogflare.errors import AuthError, PayloadError, PayloadTooLargeError
from hogflare.http import JSON, Request, Response, StallWatch, ok
from hogflare.logs import LogSummary

log = structlog.get_logger("hogflare.capture")

#: What capture v1 answers as a drop and the other routes discard without a word (PostHog does
#: the same): counted as filtered, not dropped, and not logged.
FILTERED_DROPS = frozenset({"dropped_performance_event"})

#: The route kind of PostHog's capture v1, which answers every event with its own verdict.
ANALYTICS_V1 = "analytics_v1"
#: The route kind of each path (without its trailing slash), as the decoder names it.
CAPTURE_ROUTES: dict[str, str] = {
    "/e": "legacy",
    "/i/v0/e": "event",
    "/capture": "legacy",
    "/track": "legacy",
    "/engage": "engage",
    "/batch": "event",
    # posthog-python's lane for LLM analytics events (`capture_ai()`), in /batch's shape.
    "/i/v0/ai/batch": "event",
    "/identify": "identify",
    "/alias": "alias",
    "/groups": "groups",
    "/s": "recording",
    "/i/v1/analytics/events": ANALYTICS_V1,
    "/i/v1/ai/events": ANALYTICS_V1,
}

#: Bodies that may take longer than this (bytes, once inflated) to decode are decoded on a
#: worker thread, with the GIL released, so the event loop keeps serving other requests.
_OFFLOAD_BYTES = 256 * 1024
#: A compressed body this large may inflate past that; gzip's trailer says by how much.
_COMPRESSED_OFFLOAD_BYTES = 16 * 1024


#: Packings whose inflated size the body does not tell, and which inflate far more than gzip:
#: zstd reaches 30,000 to 1, so even a small body of them is decoded off the event loop.
_UNSIZED_ENCODINGS = frozenset({"br", "zstd", "deflate", "zlib"})
_UNSIZED_OFFLOAD_BYTES = 1024


def decodes_slowly(body: bytes, content_encoding: str | None = None) -> bool:
    if len(body) > _OFFLOAD_BYTES:
        return True
    if content_encoding and content_encoding.strip().lower() in _UNSIZED_ENCODINGS:
        return len(body) > _UNSIZED_OFFLOAD_BYTES
    if body[:2] == b"\x1f\x8b" and len(body) >= 18:
        return int.from_bytes(body[-4:], "little") > _OFFLOAD_BYTES
    starts_like_json = body[:1] in (b"{", b"[")
    return len(body) > _COMPRESSED_OFFLOAD_BYTES and not starts_like_json


class CaptureService:
    def __init__(self, settings: Settings, committer: GroupCommitter | None, watch: StallWatch) -> None:
        self.settings = settings
        self.committer = committer
        self.watch = watch
        geoip_db = geoip_databases(settings)
        # The inflated cap is a multiple of the route's wire cap, as in PostHog's capture.
        try:
            self.decoders = {
                limit: Decoder(
                    max_inflated_bytes=limit * settings.inflate_ratio,
                    max_event_bytes=settings.max_event_bytes,
                    team_id=settings.team_id,
                    project_tokens=list(settings.project_tokens) or None,
                    geoip_db=geoip_db,
                    cookieless_mode=settings.cookieless_mode,
                )
                for limit in {settings.max_body_bytes, settings.max_recording_body_bytes}
            }
        except ValueError as exc:
            raise ConfigError(f"invalid setting: HOGFLARE_GEOIP_DB: {exc}") from exc
        self.client_address = ClientAddress(settings.trusted_proxies)
        # A flood of bad items must not become a flood of log lines (see LogSummary).
        self.dropped_log = LogSummary(log, "items dropped", "reason", settings.log_summary_secs)
        self.warnings_log = LogSummary(log, "person updates refused", "warning", settings.log_summary_secs)

    def body_limit(self, kind: str) -> int:
        return self.settings.max_recording_body_bytes if kind == "recording" else self.settings.max_body_bytes

    def _decode(self, kind: str, body: bytes, request: Request, detach: bool = False) -> Batch:
        facts = request_facts(request, self.client_address, store_ip=self.settings.store_ip)
        api_key: str | None
        sdk_info = None
        if kind == ANALYTICS_V1:
            api_key, sent_at = bearer_token(request), request.header(b"posthog-request-timestamp")
            sdk_info = request.header(b"posthog-sdk-info")
        else:
            api_key, sent_at = request.header(b"x-posthog-api-key"), request.header(b"x-posthog-sent-at")
        return self.decoders[self.body_limit(kind)].decode(
            kind,
            body,
            query=request.query,
            content_type=request.header(b"content-type"),
            content_encoding=request.header(b"content-encoding"),
            api_key=api_key,
            sent_at=sent_at,
            sdk_info=sdk_info,
            detach=detach,
            client_ip=facts.client_ip,
            geoip_ip=facts.geoip_ip,
            cf_ray=facts.cf_ray,
            country_code=facts.country_code,
        )

    def _count_dropped(self, dropped: dict[str, int], token: str | None, path: str) -> None:
        for reason, count in dropped.items():
            if reason in FILTERED_DROPS:
                metrics.count_filtered(count)
                continue
            metrics.count_dropped(reason, count)
            self.dropped_log.add(reason, count, token=token, path=path)

    async def handle(self, request: Request, kind: str) -> Response:
        if kind == ANALYTICS_V1 and request.method != "POST":
            return v1_error(405, "capture v1 takes POST only", request)
        body = b"" if request.method == "GET" else await request.body(self.body_limit(kind), self.watch)
        try:
            if decodes_slowly(body, request.header(b"content-encoding")):
                loop = asyncio.get_running_loop()
                batch = await loop.run_in_executor(None, self._decode, kind, body, request, True)
            else:
                batch = self._decode(kind, body, request)
        except NoValidEventError as exc:
            # Dropped all the same: counted and logged as the drops of a batch with good events are.
            self._count_dropped(exc.dropped, exc.token, request.path)
            if set(exc.dropped) == {"event_too_large"}:
                # PostHog's capture answers 413 for an event over its size, on which posthog-node
                # and posthog-python retry smaller batches before they give an event up.
                limit = self.settings.max_event_bytes
                raise PayloadTooLargeError(f"{exc}: no event under the maximum of {limit} bytes") from None
            raise
        await self._commit(batch, request.path)
        # Counted once the request is answered 200: a 503 is sent again, and its drops with it.
        self._count_dropped(batch.dropped, batch.token, request.path)
        if batch.filtered:
            metrics.count_filtered(batch.filtered)
        if batch.results is not None:
            return Response(200, batch.results.encode(), [(b"content-type", JSON), *_request_id(request)])
        if b"beacon=1" in request.query and request.query_param("beacon") == "1":
            return Response(204)
        return ok()

    async def _commit(self, batch: Batch, path: str) -> None:
        """Make ``batch`` durable (a no-op with the store off), counting what it stored."""
        if not batch.accepted or self.committer is None:
            return
        stored, duplicates, warnings = await self.committer.commit(batch)
        metrics.count_events(stored, duplicates)
        if duplicates:
            log.debug("duplicates ignored", token=batch.token, duplicates=duplicates, stored=stored)
        for warning, count in warnings.items():
            metrics.count_person_warning(warning, count)
            self.warnings_log.add(warning, count, token=batch.token, path=path)

    async def store_own_event(
        self, request: Request, token: str, event: str, distinct_id: str, properties: dict[str, str]
    ) -> None:
        """Make durable an event hogflare writes itself for ``request`` (see ``Decoder.own_event``);
        ``AuthError`` for a token capture would refuse."""
        decoder = self.decoders[self.settings.max_body_bytes]
        batch = decoder.own_event(token, event, distinct_id, msgspec.json.encode(properties).decode())
        await self._commit(batch, request.path)


def bearer_token(request: Request) -> str:
    """Capture v1's project token, from ``Authorization: Bearer <token>``."""
    header = request.header(b"authorization")
    if header is None or not header.strip():
        raise AuthError("capture v1 takes the project token as Authorization: Bearer <token>")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise PayloadError("invalid header value: Authorization must use the Bearer scheme")
    return token.strip()


#: Capture v1's error codes, by status; its SDKs show ``error_description``.
_V1_ERRORS = {
    400: "invalid_request",
    401: "invalid_api_token",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    500: "internal_error",
    503: "service_unavailable",
}


def _request_id(request: Request) -> list[tuple[bytes, bytes]]:
    """Capture v1 echoes the client's ``PostHog-Request-Id``, which stays the same over retries."""
    request_id = request.header(b"posthog-request-id")
    return [(b"posthog-request-id", request_id.encode("latin-1"))] if request_id else []


def v1_error(status: int, message: str, request: Request, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    """An error in capture v1's shape: ``{"error": <code>, "error_description": <message>}``."""
    body = {"error": _V1_ERRORS.get(status, "invalid_request"), "error_description": message}
    return Response.json(body, status, [*(headers or []), *_request_id(request)])
