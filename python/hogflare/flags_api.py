"""The flags endpoints: ``/flags`` and ``/decide`` for every SDK, and the local-evaluation
definitions (``/api/feature_flag/local_evaluation``, ``/flags/definitions``) for server SDKs.

Bodies are read the way PostHog's flags service reads them: JSON or ``text/plain`` (gzip when
``compression=gzip|gzip-js``, a ``Content-Encoding: gzip`` header or gzip's magic bytes say so;
base64 tried when JSON fails), or a form whose ``data=`` is base64 JSON.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import zlib
from typing import Any
from urllib.parse import unquote

import msgspec
import structlog

from hogflare._hogflare import GeoIpDatabase, HashKeyOverrideWrite
from hogflare.config import Settings
from hogflare.enrichment import ClientAddress, geoip_databases
from hogflare.errors import HogflareError, PayloadError, PayloadTooLargeError
from hogflare.flags import FlagsService
from hogflare.http import Request, Response, StallWatch, error
from hogflare.private_api import api_error, authenticate
from hogflare.remote_config import config_fields

#: Paths (without trailing slash) of each endpoint.
FLAGS_ROUTES = frozenset({"/flags", "/decide"})
DEFINITIONS_ROUTES = frozenset({"/api/feature_flag/local_evaluation", "/flags/definitions"})


def remote_config_key(path: str) -> str | None:
    """The flag key (or id) of ``/api/projects/<project>/feature_flags/<key>/remote_config``, the
    project being ``@current`` or any id: the project token names it."""
    parts = path.split("/")
    if len(parts) != 7 or parts[1:3] != ["api", "projects"] or parts[4] != "feature_flags":
        return None
    return parts[5] if parts[6] == "remote_config" and parts[5] else None


log = structlog.get_logger("hogflare.flags")

_encode = msgspec.json.Encoder().encode
#: The largest flags request, on the wire and inflated. SDKs send a few kilobytes; the body is
#: read with the event loop held, so a small gzip body inflating to the event routes' cap would
#: stall every request of the worker for most of a second.
MAX_FLAGS_BODY_BYTES = 2_000_000
#: Python's recursion limit bounds how deep a request may nest (about a thousand levels).
_TOO_DEEP = "the flags request body is nested too deeply"
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
#: The distinct id posthog-js sends in cookieless mode.
COOKIELESS_SENTINEL = b"$posthog_cookieless"


class FlagsEndpoints:
    def __init__(self, settings: Settings, service: FlagsService, watch: StallWatch) -> None:
        self.settings = settings
        self.service = service
        self.watch = watch
        self._config: tuple[bool, bytes] | None = None
        self._project_tokens = list(settings.project_tokens) or None
        self.client_address = ClientAddress(settings.trusted_proxies)
        # Capture's decoder has refused a file that is no database by now.
        paths = geoip_databases(settings, warn=False)
        self._geoip = GeoIpDatabase(paths) if paths else None

    def has_active_flags(self) -> bool:
        """What remote config reports as ``hasFeatureFlags``: posthog-js asks ``/flags`` only when true."""
        return self.service.current().has_active_flags()

    async def answer(self, request: Request) -> Response:
        """``/flags`` and ``/decide``: a GET gets no flags (PostHog's minimal answer), a POST every flag."""
        decide = request.path.rstrip("/") == "/decide"
        version = _version(request.query_param("v"))
        config = request.query_param("config")
        include_config = decide if config is None else config.lower() in {"true", "1", "yes"}
        if request.method == "GET":
            body = self.service.current().respond("", decide=decide, version=version, evaluate=False)
        elif request.method == "POST":
            limit = min(self.settings.max_body_bytes, MAX_FLAGS_BODY_BYTES)
            raw = await request.body(limit, self.watch)
            data = request_json(raw, request, limit)
            answered = self._answer(data, request, decide=decide, version=version)
            if answered is None and (lenient := _lenient_json(data)) is not None:
                answered = self._answer(lenient, request, decide=decide, version=version)
            if answered is None:
                raise PayloadError("the flags request body is not JSON (nor base64 JSON)")
            status, body, remember = answered
            if status != 200:
                return Response(status, body, _TEXT)
            if remember is not None:
                await self._remember(remember)
        else:
            return error(405, "method not allowed")
        if include_config:
            body = _with_config(body, self._config_fields())
        return Response(200, body, [(b"content-type", b"application/json")])

    def _config_fields(self) -> bytes:
        """The remote-config keys, encoded once per flag set (``hasFeatureFlags`` follows it)."""
        has_flags = self.has_active_flags()
        if self._config is None or self._config[0] != has_flags:
            fields = _encode(config_fields(self.settings, has_feature_flags=has_flags))
            self._config = (has_flags, fields)
        return self._config[1]

    async def _remember(self, write: HashKeyOverrideWrite) -> None:
        """Store experience continuity's hash key before answering, as PostHog does, on a thread:
        the write waits for the store's write lock. The answer does not depend on it, so a store
        that refuses costs the user's next pages their continuity, not this answer."""
        try:
            await asyncio.to_thread(write.write)
        except HogflareError as exc:
            log.warning("experience continuity's hash key not stored", error=str(exc))

    def _answer(
        self, data: bytes, request: Request, *, decide: bool, version: int | None
    ) -> tuple[int, bytes, HashKeyOverrideWrite | None] | None:
        # Only a cookieless visitor's request, and the location a GeoIP database gives, need the
        # client's address; the rest of what the connection says only the cookieless one.
        cookieless = COOKIELESS_SENTINEL in data
        address = self.client_address(request) if cookieless or self._geoip is not None else None
        visitor = None
        if cookieless:
            origin, user_agent = request.header(b"origin"), request.header(b"user-agent")
            visitor = (self.settings.cookieless_mode, address, origin, user_agent)
        return self.service.current().answer(
            data,
            store=self.service.store,
            project_tokens=self._project_tokens,
            decide=decide,
            version=version,
            visitor=visitor,
            geoip=self._geoip,
            client_ip=address,
        )

    def definitions(self, request: Request) -> Response:
        """The flag definitions server SDKs evaluate locally, for a personal API key or a project secret key."""
        if request.method != "GET":
            return error(405, "method not allowed")
        refusal = self._authenticate(request)
        if refusal is not None:
            return refusal
        body, etag = self.service.definitions()
        headers = [(b"etag", etag.encode())]
        if _etag_matches(request.header(b"if-none-match"), etag):
            return Response(304, b"", headers)
        return Response(200, body, [(b"content-type", b"application/json"), *headers])

    def remote_config(self, request: Request, key: str) -> Response:
        """A remote config flag's payload, as posthog-node's ``getRemoteConfigPayload`` and
        posthog-python's ``get_remote_config_payload`` read it, for the same keys as definitions."""
        if request.method != "GET":
            return error(405, "method not allowed")
        refusal = self._authenticate(request)
        if refusal is not None:
            return refusal
        body = self.service.current().remote_config_payload(key)
        if body is None:
            return api_error(404, "invalid_request", "Not found.", "not_found")
        return Response(200, body.encode(), [(b"content-type", b"application/json")])

    def _authenticate(self, request: Request) -> Response | None:
        return authenticate(request, (*self.settings.personal_api_keys, *self.settings.project_secret_keys))


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    for candidate in header.split(","):
        tag = candidate.strip().removeprefix("W/")
        if tag in {etag, "*"} or tag.strip('"') == etag.strip('"'):
            return True
    return False


# --- response shapes -----------------------------------------------------------------------------


def _version(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        return 1
    # Versions from 4 on answer alike, and so do those below 2: only the range between matters.
    return max(0, min(number, 99))


def _with_config(answer: bytes, config: bytes) -> bytes:
    """The flags answer with the remote-config keys after its own (both are JSON objects, and
    their keys never meet)."""
    return answer[:-1] + b"," + config[1:]


# --- request bodies ------------------------------------------------------------------------------


def request_json(body: bytes, request: Request, max_inflated: int) -> bytes:
    """A flags request body in any encoding an SDK uses, as the JSON it carries (which the core
    reads); a ``PayloadError`` says what is wrong with the encoding."""
    content_type = (request.header(b"content-type") or "application/json").split(";")[0].strip().lower()
    compression = (request.query_param("compression") or "").lower()
    if content_type == "application/x-www-form-urlencoded" and (
        body.lstrip()[:1] in (b"{", b"[") or body[:2] == b"\x1f\x8b"
    ):
        # curl labels any body a form: one that starts like JSON, or is gzip, is what its bytes
        # say, as capture reads it (no form can start so).
        content_type = "application/json"
    if content_type in {"application/json", "text/plain", ""}:
        if compression in {"gzip", "gzip-js"} or "gzip" in (request.header(b"content-encoding") or ""):
            return _gunzip(body, max_inflated)
        if compression not in {"", "base64"}:
            raise PayloadError(f"unsupported compression: {compression}")
        if body[:2] == b"\x1f\x8b":
            return _gunzip(body, max_inflated)
        return body
    if content_type == "application/x-www-form-urlencoded":
        if compression not in {"", "base64"}:
            raise PayloadError(f"compression {compression} is not supported for form bodies")
        return _base64(_form_data(body))
    raise PayloadError(f"unsupported content type: {content_type}")


def _lenient_json(data: bytes) -> bytes | None:
    """A body that is not strict JSON read as PostHog reads it: JSON5 (``NaN`` and ``Infinity``
    as null), else base64 of that. Strict JSON back; ``None`` when neither reading works."""
    candidates = [data]
    with contextlib.suppress(PayloadError):
        candidates.append(_base64(data))
    for candidate in candidates:
        try:
            loose: Any = json.loads(candidate, parse_constant=lambda _: None)
        except ValueError:
            continue
        except RecursionError:
            raise PayloadError(_TOO_DEEP) from None
        try:
            return _encode(loose)
        except UnicodeEncodeError:
            # Half an emoji, which JSON5's reading keeps as a lone surrogate UTF-8 cannot hold.
            return _encode(_whole_text(loose))
    return None


def _whole_text(value: Any) -> Any:
    """``value`` with each lone surrogate in its strings replaced by U+FFFD, as the core replaces it."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_whole_text(item) for item in value]
    if isinstance(value, dict):
        return {_whole_text(key): _whole_text(item) for key, item in value.items()}
    return value


def _form_data(body: bytes) -> bytes:
    text = body.decode("latin-1")
    for part in text.split("&"):
        if part.startswith("data="):
            return unquote(part.removeprefix("data="), encoding="latin-1").encode("latin-1")
    return unquote(text, encoding="latin-1").encode("latin-1")


def _base64(data: bytes) -> bytes:
    cleaned = unquote(data.decode("latin-1"), encoding="latin-1").replace(" ", "").strip().rstrip("=")
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError) as exc:
        raise PayloadError(f"the flags request body is not valid base64: {exc}") from None


def _gunzip(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise PayloadError(f"the flags request body is not valid gzip: {exc}") from None
    if len(out) > limit:
        raise PayloadTooLargeError(f"request body inflates past the maximum of {limit} bytes")
    return out
