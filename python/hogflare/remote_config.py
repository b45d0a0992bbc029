"""SDK remote config: ``/array/<token>/config[.js]``, and the config fields ``/decide`` and
``/flags?config=true`` merge into their answer.

This shapes what posthog-js and the other SDKs read when they boot: compression, the event
endpoint, autocapture, whether a recorder should start, and whether there are flags to ask for.
"""

from __future__ import annotations

from typing import Any

import msgspec

from hogflare._hogflare import project_token
from hogflare.config import Settings
from hogflare.http import Response
from hogflare.models import ErrorTrackingConfig, RemoteConfig, SessionRecordingConfig

_encode = msgspec.json.Encoder().encode


def remote_config(settings: Settings, token: str, *, has_feature_flags: bool = False) -> RemoteConfig:
    recording: SessionRecordingConfig | bool = False
    if settings.session_recording_endpoint:
        recording = SessionRecordingConfig(endpoint=settings.session_recording_endpoint)
    exceptions = settings.autocapture_exceptions
    return RemoteConfig(
        token=token,
        hasFeatureFlags=has_feature_flags,
        sessionRecording=recording,
        autocaptureExceptions=exceptions,
        errorTracking=ErrorTrackingConfig(autocapture_exceptions=exceptions),
    )


def config_js(config: RemoteConfig, key: str) -> bytes:
    """The script posthog-js loads from ``config.js``: it parks the config where the SDK looks,
    under ``key`` (the token as the SDK has it)."""
    token = _encode(key).decode()
    body = _encode(config).decode()
    return (
        "(function() {\n"
        "  window._POSTHOG_REMOTE_CONFIG = window._POSTHOG_REMOTE_CONFIG || {};\n"
        f"  window._POSTHOG_REMOTE_CONFIG[{token}] = {{ config: {body}, siteApps: [] }};\n"
        "})();\n"
    ).encode()


_CONFIG_HEADERS = [(b"vary", b"origin, referer"), (b"cache-control", b"public, max-age=60")]


def array_config(settings: Settings, raw_token: str, *, javascript: bool, has_feature_flags: bool) -> Response:
    # Capture's own rule, not PostHog's config's (letters, digits, `_`, `-`): a token capture takes
    # but the config refused would leave posthog-js booting without config, autocapture off.
    token = project_token(raw_token)
    if token is None:
        return Response.json({"detail": "Invalid token"}, 400)
    if not settings.takes_project(token):
        # As PostHog answers for a token no project has: the SDK then boots without remote config.
        return Response.json({"detail": "Not found."}, 404)
    config = remote_config(settings, token, has_feature_flags=has_feature_flags)
    if javascript:
        script = config_js(config, raw_token)
        return Response(200, script, [(b"content-type", b"application/javascript"), *_CONFIG_HEADERS])
    return Response.json(config, headers=_CONFIG_HEADERS)


#: PostHog's public lists, read with the project token, that posthog-js fetches when a page's code
#: asks (``getEarlyAccessFeatures()``, ``getSurveys()``) or its config enables them (product tours,
#: web experiments), each with the key its answer holds the list under. hogflare runs none of
#: these products: each list is empty, so the SDK's callbacks get ``[]`` rather than an error.
PUBLIC_LISTS = {
    "/api/early_access_features": "earlyAccessFeatures",
    "/api/surveys": "surveys",
    "/api/product_tours": "product_tours",
    "/api/web_experiments": "experiments",
}


def public_list(settings: Settings, path: str, raw_token: str | None) -> Response:
    """One of ``PUBLIC_LISTS``, for a project token in ``?token=``; PostHog's 401 without one."""
    token = None if raw_token is None else project_token(raw_token)
    if token is None or not settings.takes_project(token):
        detail = "Project API key invalid. You can find your project API key in PostHog project settings."
        code = "invalid_api_key"
        if not raw_token:
            detail, code = (
                "API key not provided. You can find your project API key in PostHog project settings.",
                "missing_api_key",
            )
        return Response.json({"type": "authentication_error", "code": code, "detail": detail, "attr": None}, 401)
    return Response.json({PUBLIC_LISTS[path]: []}, headers=_CONFIG_HEADERS)


def config_fields(settings: Settings, *, has_feature_flags: bool) -> dict[str, Any]:
    """The remote-config keys PostHog flattens into a flags answer (its ``ConfigResponse``)."""
    config = remote_config(settings, settings.api_key or "", has_feature_flags=has_feature_flags)
    return {
        "supportedCompression": config.supportedCompression,
        "hasFeatureFlags": config.hasFeatureFlags,
        "sessionRecording": config.sessionRecording,
        "autocapture_opt_out": config.autocapture_opt_out,
        "autocaptureExceptions": config.autocaptureExceptions,
        "capturePerformance": config.capturePerformance,
        "analytics": config.analytics,
        "elementsChainAsString": config.elementsChainAsString,
        "errorTracking": config.errorTracking,
        "captureDeadClicks": config.captureDeadClicks,
        "defaultIdentifiedOnly": config.defaultIdentifiedOnly,
        "heatmaps": config.heatmaps,
        "surveys": config.surveys,
        "siteApps": [],
        # Hogflare's answers name the project token here (`POSTHOG_API_KEY`); SDKs do not read it.
        "config": {"enable_collect_everything": True, **({"apiToken": settings.api_key} if settings.api_key else {})},
        "toolbarParams": {},
        "isAuthenticated": False,
    }
