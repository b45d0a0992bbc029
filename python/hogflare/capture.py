"""The capture routes: PostHog's (``/e``, ``/i/v0/e``, ``/batch``, ``/capture``, ``/track``,
``/engage``, ``/s``) and Hogflare's (``/identify``, ``/alias``, ``/groups``).

Each request crosses into Rust once to be decoded, then waits for the group commit that makes it
durable; only then does it get its 200.
"""

from __future__ import annotations

import asyncio

import structlog

from hogflare._hogflare import Batch, Decoder
from hogflare.commit import GroupCommitter
from hogflare.config import Settings
from hogflare.enrichment import ClientAddress, request_facts
from hogflare.http import Request, Response, StallWatch, ok

log = structlog.get_logger("hogflare.capture")

#: Path (without trailing slash) → the route kind the decoder applies.
CAPTURE_ROUTES: dict[str, str] = {
    "/e": "legacy",
    "/i/v0/e": "event",
    "/capture": "legacy",
    "/track": "legacy",
    "/engage": "engage",
    "/batch": "event",
    "/identify": "identify",
    "/alias": "alias",
    "/groups": "groups",
    "/s": "recording",
}

#: Bodies that may take longer than this (bytes, once inflated) to decode are decoded on a
#: worker thread, with the GIL released, so the event loop keeps serving other requests.
_OFFLOAD_BYTES = 256 * 1024
#: A compressed body this large may inflate past that; gzip's trailer says by how much.
_COMPRESSED_OFFLOAD_BYTES = 16 * 1024


def decodes_slowly(body: bytes) -> bool:
    if len(body) > _OFFLOAD_BYTES:
        return True
    if body[:2] == b"\x1f\x8b" and len(body) >= 18:
        return int.from_bytes(body[-4:], "little") > _OFFLOAD_BYTES
    starts_like_json = body[:1] in (b"{", b"[")
    return len(body) > _COMPRESSED_OFFLOAD_BYTES and not starts_like_json


class CaptureService:
    def __init__(self, settings: Settings, committer: GroupCommitter | None, watch: StallWatch) -> None:
        self.settings = settings
        self.committer = committer
        self.watch = watch
        # The inflated cap is a multiple of the route's wire cap, as in PostHog's capture.
        self.decoders = {
            limit: Decoder(
                max_inflated_bytes=limit * settings.inflate_ratio,
                max_event_bytes=settings.max_event_bytes,
                team_id=settings.team_id,
                project_tokens=list(settings.project_tokens) or None,
            )
            for limit in {settings.max_body_bytes, settings.max_recording_body_bytes}
        }
        self.client_address = ClientAddress(settings.trusted_proxies)

    def body_limit(self, kind: str) -> int:
        return self.settings.max_recording_body_bytes if kind == "recording" else self.settings.max_body_bytes

    def _decode(self, kind: str, body: bytes, request: Request, detach: bool = False) -> Batch:
        facts = request_facts(request, self.client_address, store_ip=self.settings.store_ip)
        return self.decoders[self.body_limit(kind)].decode(
            kind,
            body,
            query=request.query,
            content_type=request.header(b"content-type"),
            content_encoding=request.header(b"content-encoding"),
            api_key=request.header(b"x-posthog-api-key"),
            sent_at=request.header(b"x-posthog-sent-at"),
            detach=detach,
            client_ip=facts.client_ip,
            cf_ray=facts.cf_ray,
            country_code=facts.country_code,
        )

    async def handle(self, request: Request, kind: str) -> Response:
        body = b"" if request.method == "GET" else await request.body(self.body_limit(kind), self.watch)
        if decodes_slowly(body):
            loop = asyncio.get_running_loop()
            batch = await loop.run_in_executor(None, self._decode, kind, body, request, True)
        else:
            batch = self._decode(kind, body, request)
        if batch.dropped:
            log.warning("items dropped", path=request.path, token=batch.token, dropped=batch.dropped)
        if batch.accepted and self.committer is not None:
            stored, duplicates, warnings = await self.committer.commit(batch)
            if duplicates:
                log.debug("duplicates ignored", token=batch.token, duplicates=duplicates, stored=stored)
            if warnings:
                log.warning("person updates refused", path=request.path, token=batch.token, warnings=warnings)
        if b"beacon=1" in request.query and request.query_param("beacon") == "1":
            return Response(204)
        return ok()
