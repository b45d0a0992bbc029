"""SDK remote config (``/array/<token>/config[.js]``) and the flags endpoints (``/flags``, ``/decide``).

This shapes what posthog-js and the server SDKs read when they boot: compression, the event
endpoint, autocapture, and whether a recorder should start. No flags are evaluated yet: every
request gets an empty set, which the SDKs take as "no flag is on".
"""

from __future__ import annotations

import re
import time
import uuid

import msgspec

from hogflare.config import Settings
from hogflare.http import Request, Response
from hogflare.models import FlagsResponse, RemoteConfig, SessionRecordingConfig

_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_encode = msgspec.json.Encoder().encode


def valid_token(token: str) -> bool:
    return bool(_TOKEN.match(token)) and not token.startswith("phx_")


def remote_config(settings: Settings, token: str, *, has_feature_flags: bool = False) -> RemoteConfig:
    recording: SessionRecordingConfig | bool = False
    if settings.session_recording_endpoint:
        recording = SessionRecordingConfig(endpoint=settings.session_recording_endpoint)
    return RemoteConfig(token=token, hasFeatureFlags=has_feature_flags, sessionRecording=recording)


def config_js(config: RemoteConfig) -> bytes:
    """The script posthog-js loads from ``config.js``: it parks the config where the SDK looks."""
    token = _encode(config.token).decode()
    body = _encode(config).decode()
    return (
        "(function() {\n"
        "  window._POSTHOG_REMOTE_CONFIG = window._POSTHOG_REMOTE_CONFIG || {};\n"
        f"  window._POSTHOG_REMOTE_CONFIG[{token}] = {{ config: {body}, siteApps: [] }};\n"
        "})();\n"
    ).encode()


_CONFIG_HEADERS = [(b"vary", b"origin, referer"), (b"cache-control", b"public, max-age=60")]


def array_config(settings: Settings, token: str, *, javascript: bool) -> Response:
    if not valid_token(token):
        return Response.json({"detail": "Invalid token"}, 400)
    config = remote_config(settings, token)
    if javascript:
        return Response(200, config_js(config), [(b"content-type", b"application/javascript"), *_CONFIG_HEADERS])
    return Response.json(config, headers=_CONFIG_HEADERS)


def flags_response(settings: Settings, request: Request, *, include_config: bool) -> Response:
    """Answer ``/flags`` and ``/decide`` (with the remote-config fields when ``include_config``)."""
    flags = FlagsResponse(
        featureFlags={},
        featureFlagPayloads={},
        flags={},
        errorsWhileComputingFlags=False,
        requestId=str(uuid.uuid4()),
        evaluatedAt=int(time.time() * 1000),
    )
    if not include_config:
        return Response.json(flags)
    payload = msgspec.structs.asdict(flags)
    config = remote_config(settings, settings.api_key or "")
    payload.update(
        {
            "supportedCompression": config.supportedCompression,
            "sessionRecording": config.sessionRecording,
            "autocapture_opt_out": config.autocapture_opt_out,
            "autocaptureExceptions": config.autocaptureExceptions,
            "capturePerformance": config.capturePerformance,
            "analytics": config.analytics,
            "elementsChainAsString": config.elementsChainAsString,
            "heatmaps": config.heatmaps,
            "surveys": config.surveys,
            "siteApps": [],
            "config": {"enable_collect_everything": True},
            "toolbarParams": {},
            "isAuthenticated": False,
        }
    )
    return Response.json(payload)


def wants_config(request: Request) -> bool:
    """``/decide`` always carries config; ``/flags`` only with ``config=true``."""
    if request.path.rstrip("/") == "/decide":
        return True
    return (request.query_param("config") or "").lower() in {"true", "1"}
