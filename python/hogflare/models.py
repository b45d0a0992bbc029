"""The wire contracts hogflare owns: what SDKs send for flags, and what it answers for config and flags."""

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


class FlagReason(msgspec.Struct, frozen=True, gc=False):
    code: str
    condition_index: int | None = None
    description: str | None = None


class FlagMetadata(msgspec.Struct, frozen=True, gc=False):
    id: int | None = None
    version: int | None = None
    description: str | None = None
    #: The payload as a JSON-encoded string, as PostHog stores and sends it.
    payload: str | None = None


class FlagDetail(msgspec.Struct, frozen=True, kw_only=True):
    """One flag's answer in the v2 ``flags`` map."""

    key: str
    enabled: bool
    variant: str | None = None
    reason: FlagReason
    metadata: FlagMetadata = FlagMetadata()

    @property
    def value(self) -> bool | str:
        """What an SDK reads as the flag's value: the variant, else whether it is on."""
        return self.variant if self.variant is not None else self.enabled


class Evaluation(msgspec.Struct, frozen=True):
    """Every flag's answer for one user, as the core evaluates them."""

    flags: dict[str, FlagDetail]
    errorsWhileComputingFlags: bool = False


class ApiError(msgspec.Struct, frozen=True):
    """PostHog's (Django REST framework's) error body on its private API."""

    type: str
    code: str
    detail: str
    attr: str | None = None


class FlagSummary(msgspec.Struct, frozen=True):
    """One line of ``hogflare flags list``."""

    key: str
    active: bool
    type: str
    source: str
    #: Whether server SDKs get it from the definitions endpoint (else they ask ``/flags``).
    local: bool
