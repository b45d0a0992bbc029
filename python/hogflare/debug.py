"""``GET /__debug/person/<distinct_id>``: Hogflare's deployment check, on when ``PERSON_DEBUG_TOKEN``
is set. It shows the person a distinct id resolves to, as the store holds it now."""

from __future__ import annotations

import hmac
from typing import Any

import msgspec

from hogflare._hogflare import Store
from hogflare.config import Settings
from hogflare.http import Request, Response


def person_debug(settings: Settings, store: Store | None, request: Request, distinct_id: str) -> Response:
    expected = settings.person_debug_token
    if not expected:
        return Response(404)
    if not debug_token_matches(request, expected):
        return Response(401)
    token = request.query_param("token") or request.query_param("api_key")
    found = store.person(token, distinct_id) if store is not None else None
    record: dict[str, Any] | None = None
    if found is not None:
        record = {
            "id": found["id"],
            "team_id": settings.team_id,
            "uuid": found["uuid"],
            "created_at": found["created_at"],
            "version": found["version"],
            "is_identified": found["is_identified"],
            "distinct_ids": found["distinct_ids"],
            "properties": msgspec.json.decode(found["properties"]),
            "properties_set_once": msgspec.json.decode(found["properties_set_once"]),
        }
    return Response.json({"canonical_id": distinct_id, "record": record})


def debug_token_matches(request: Request, expected: str) -> bool:
    """Whether Hogflare's ``x-hogflare-debug-token`` header holds ``expected`` (both trimmed),
    compared in constant time."""
    given = (request.header(b"x-hogflare-debug-token") or "").strip()
    return hmac.compare_digest(given.encode(), expected.strip().encode())
