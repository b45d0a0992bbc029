"""The flags endpoints: ``/flags`` and ``/decide`` for every SDK, and the local-evaluation
definitions (``/api/feature_flag/local_evaluation``, ``/flags/definitions``) for server SDKs.

Bodies are read the way PostHog's flags service reads them: JSON or ``text/plain`` (gzip when
``compression=gzip|gzip-js``, a ``Content-Encoding: gzip`` header or gzip's magic bytes say so;
base64 tried when JSON fails), or a form whose ``data=`` is base64 JSON.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import zlib
from typing import Any, TypeVar
from urllib.parse import unquote

import msgspec

from hogflare.config import Settings
from hogflare.errors import PayloadError, PayloadTooLargeError
from hogflare.flags import FlagsService
from hogflare.http import Request, Response, StallWatch, error
from hogflare.models import ApiError, FlagsRequest
from hogflare.remote_config import config_fields

#: Paths (without trailing slash) of each endpoint.
FLAGS_ROUTES = frozenset({"/flags", "/decide"})
DEFINITIONS_ROUTES = frozenset({"/api/feature_flag/local_evaluation", "/flags/definitions"})

_decode_request = msgspec.json.Decoder(FlagsRequest).decode
_encode = msgspec.json.Encoder().encode
_MAX_DISTINCT_ID = 200
#: Python's recursion limit bounds how deep a request may nest (about a thousand levels).
_TOO_DEEP = "the flags request body is nested too deeply"
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
T = TypeVar("T")


class FlagsEndpoints:
    def __init__(self, settings: Settings, service: FlagsService, watch: StallWatch) -> None:
        self.settings = settings
        self.service = service
        self.watch = watch
        self._config: tuple[bool, bytes] | None = None

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
            body = self.service.respond(None, "", decide=decide, version=version, evaluate=False)
        elif request.method == "POST":
            raw = await request.body(self.settings.max_body_bytes, self.watch)
            parsed = read_request(raw, request, self.settings.max_body_bytes * self.settings.inflate_ratio)
            token = parsed.token or parsed.api_key or parsed.dollar_token
            if not token:
                return Response(401, b"No API token provided. Please include a valid API token in your request.", _TEXT)
            if token.startswith("phx_") or (self.settings.project_tokens and token not in self.settings.project_tokens):
                return Response(
                    401,
                    b"The provided API key is invalid or has expired. Please check your API key and try again.",
                    _TEXT,
                )
            body = self._respond(token, parsed, decide=decide, version=version)
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

    def _respond(self, token: str, parsed: FlagsRequest, *, decide: bool, version: int | None) -> bytes:
        if _truthy(parsed.disable_flags):
            return self.service.respond(token, "", decide=decide, version=version, evaluate=False)
        distinct_id = _text(_either(parsed.distinct_id, parsed.dollar_distinct_id))
        if distinct_id is None:
            raise PayloadError("The distinct_id field is missing from the request. Please include a valid identifier.")
        groups = _either(parsed.groups, parsed.dollar_groups) or {}
        return self.service.respond(
            token,
            distinct_id[:_MAX_DISTINCT_ID],
            decide=decide,
            version=version,
            person_properties=_either(parsed.person_properties, parsed.dollar_properties),
            groups={kind: key for kind, value in groups.items() if (key := _text(value)) is not None},
            group_properties=_either(parsed.group_properties, parsed.dollar_group_properties),
            anon_distinct_id=_text(parsed.anon_distinct_id),
            device_id=_text(parsed.device_id),
            flag_keys=_either(parsed.flag_keys_to_evaluate, parsed.flag_keys),
            environments=_either(parsed.evaluation_contexts, parsed.evaluation_environments),
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

    def _authenticate(self, request: Request) -> Response | None:
        key = _bearer(request.header(b"authorization")) or request.query_param("personal_api_key")
        if not key:
            return _auth_error("Authentication credentials were not provided.")
        allowed = (*self.settings.personal_api_keys, *self.settings.project_secret_keys)
        # Compare against every key so the time taken says nothing about which one was close.
        matched = False
        for candidate in allowed:
            matched |= hmac.compare_digest(key.encode(), candidate.encode())
        if matched:
            return None
        kind = "project secret API key" if key.startswith("phs_") else "personal API key"
        return _auth_error(f"Invalid {kind}.")


def _auth_error(detail: str) -> Response:
    return Response.json(ApiError(type="authentication_error", code="authentication_failed", detail=detail), 401)


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


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
        return int(value)
    except ValueError:
        return 1


def _with_config(answer: bytes, config: bytes) -> bytes:
    """The flags answer with the remote-config keys after its own (both are JSON objects, and
    their keys never meet)."""
    return answer[:-1] + b"," + config[1:]


# --- request bodies ------------------------------------------------------------------------------


def read_request(body: bytes, request: Request, max_inflated: int) -> FlagsRequest:
    """Decode a flags request body in any encoding an SDK uses; a ``PayloadError`` says what is wrong."""
    content_type = (request.header(b"content-type") or "application/json").split(";")[0].strip().lower()
    compression = (request.query_param("compression") or "").lower()
    if content_type in {"application/json", "text/plain", ""}:
        if compression in {"gzip", "gzip-js"} or "gzip" in (request.header(b"content-encoding") or ""):
            body = _gunzip(body, max_inflated)
        elif compression not in {"", "base64"}:
            raise PayloadError(f"unsupported compression: {compression}")
        elif body[:2] == b"\x1f\x8b":
            body = _gunzip(body, max_inflated)
        return _parse(body, base64_fallback=True)
    if content_type == "application/x-www-form-urlencoded":
        if compression not in {"", "base64"}:
            raise PayloadError(f"compression {compression} is not supported for form bodies")
        return _parse(_base64(_form_data(body)))
    raise PayloadError(f"unsupported content type: {content_type}")


def _parse(data: bytes, *, base64_fallback: bool = False) -> FlagsRequest:
    try:
        return _decode_request(data)
    except msgspec.ValidationError as exc:
        raise PayloadError(f"invalid flags request: {exc}") from None
    except msgspec.DecodeError:
        pass
    except RecursionError:
        raise PayloadError(_TOO_DEEP) from None
    # PostHog reads bodies as JSON5, so NaN and Infinity are accepted (as null).
    try:
        loose: Any = json.loads(data, parse_constant=lambda _: None)
    except ValueError:
        loose = None
    except RecursionError:
        raise PayloadError(_TOO_DEEP) from None
    if isinstance(loose, dict):
        try:
            return msgspec.convert(loose, FlagsRequest)
        except msgspec.ValidationError as exc:
            raise PayloadError(f"invalid flags request: {exc}") from None
    if base64_fallback:
        try:
            return _parse(_base64(data))
        except PayloadError:
            pass
    raise PayloadError("the flags request body is not JSON (nor base64 JSON)")


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


def _either(value: T | None, alias: T | None) -> T | None:
    """A request field, else its alias (contexts win over environments, as in PostHog)."""
    return value if value is not None else alias


def _text(value: object) -> str | None:
    """A distinct id or group key as PostHog reads it: a string, or a number written out."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    return bool(value)
