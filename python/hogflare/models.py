"""The wire contracts hogflare owns: what it answers to SDKs for config and flags."""

from __future__ import annotations

from typing import Any

import msgspec


class AnalyticsConfig(msgspec.Struct, frozen=True):
    endpoint: str = "/i/v0/e/"


class ErrorTrackingConfig(msgspec.Struct, frozen=True, rename="camel"):
    autocapture_exceptions: bool = False
    suppression_rules: tuple[Any, ...] = ()


class ScriptConfig(msgspec.Struct, frozen=True):
    script: str = "posthog-recorder"


class SessionRecordingConfig(msgspec.Struct, frozen=True, rename="camel", omit_defaults=False):
    """Served only when a recording endpoint is configured; posthog-js starts the recorder then."""

    endpoint: str
    console_log_recording_enabled: bool = True
    recorder_version: str = "v2"
    sample_rate: float | None = None
    minimum_duration_milliseconds: int | None = None
    linked_flag: Any = None
    network_payload_capture: Any = None
    masking: Any = None
    url_triggers: tuple[Any, ...] = ()
    url_blocklist: tuple[Any, ...] = ()
    event_triggers: tuple[Any, ...] = ()
    trigger_match_type: str | None = None
    script_config: ScriptConfig = ScriptConfig()


class RemoteConfig(msgspec.Struct, frozen=True):
    """``/array/<token>/config``: the document posthog-js boots from (PostHog's field names)."""

    token: str
    supportedCompression: tuple[str, ...] = ("gzip", "gzip-js")
    hasFeatureFlags: bool = False
    captureDeadClicks: bool = False
    capturePerformance: bool = False
    autocapture_opt_out: bool = False
    autocaptureExceptions: bool = False
    analytics: AnalyticsConfig = AnalyticsConfig()
    elementsChainAsString: bool = True
    errorTracking: ErrorTrackingConfig = ErrorTrackingConfig()
    sessionRecording: SessionRecordingConfig | bool = False
    heatmaps: bool = False
    surveys: bool = False
    conversations: bool = False
    productTours: bool = False
    defaultIdentifiedOnly: bool = True
    siteApps: tuple[Any, ...] = ()


class FlagsResponse(msgspec.Struct, frozen=True):
    """``/flags?v=2``; ``/decide`` and ``config=true`` add the remote-config fields."""

    featureFlags: dict[str, bool | str]
    featureFlagPayloads: dict[str, str]
    flags: dict[str, Any]
    errorsWhileComputingFlags: bool
    requestId: str
    evaluatedAt: int
