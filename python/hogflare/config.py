"""Settings, read once from the environment (Hogflare's variable names kept) and CLI flags."""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

MB = 1_000_000
#: PostHog's capture sizes its body limits in these (axum's `DefaultBodyLimit`).
MiB = 1 << 20
GiB = 1 << 30
#: ``HOGFLARE_LOG_LEVEL``'s values, for hogflare's lines and Granian's alike.
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

#: Durations (seconds, may be fractional) and sizes cannot be negative; some must be positive.
#: Beyond the upper bounds (a year; 2**62) the values mean nothing, and the libraries they are
#: handed to (the store, Granian, the thread waits) fail on them after the server has started.
_MAX_SECONDS = 365 * 86_400
_MAX_COUNT = 1 << 62
Seconds = Annotated[float, msgspec.Meta(ge=0, le=_MAX_SECONDS)]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=_MAX_SECONDS)]
Count = Annotated[int, msgspec.Meta(ge=0, le=_MAX_COUNT)]
PositiveCount = Annotated[int, msgspec.Meta(gt=0, le=_MAX_COUNT)]


#: On SIGTERM, how long a worker waits for the commits in flight: one takes milliseconds unless
#: another process holds the store.
COMMIT_DRAIN_SECS = 10.0
#: Beyond the shutdown deadline: the shipper may be in the middle of one last request to a stream.
SHIPPER_STOP_GRACE_SECS = 5.0


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything hogflare can be told. Each field's environment variable is in ``ENV``."""

    data_dir: Path = Path("data")
    project_tokens: tuple[str, ...] = ()
    team_id: Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)] | None = None
    api_key: str | None = None
    session_recording_endpoint: str | None = None
    #: Whether remote config switches posthog-js's exception autocapture on.
    autocapture_exceptions: bool = False
    person_debug_token: str | None = None
    #: Allows error-issue status changes; without it, ``person_debug_token`` does, as in Hogflare.
    error_admin_token: str | None = None
    group_type_0: str | None = None
    group_type_1: str | None = None
    group_type_2: str | None = None
    group_type_3: str | None = None
    group_type_4: str | None = None
    feature_flags: str | None = None
    feature_flags_file: Path | None = None
    personal_api_keys: tuple[str, ...] = ()
    project_secret_keys: tuple[str, ...] = ()
    person_api_keys: tuple[str, ...] = ()
    signing_secret: str | None = None
    signature_tolerance_secs: Annotated[int, msgspec.Meta(ge=0, le=_MAX_SECONDS)] | None = None
    trusted_proxies: tuple[str, ...] = ()
    store_ip: bool = True
    geoip_db: str | None = None
    #: PostHog's per-project cookieless server hash mode, for every project here.
    cookieless_mode: Literal["stateful", "stateless", "disabled"] = "stateful"

    dedupe_window_days: Annotated[int, msgspec.Meta(gt=0, le=36_500)] = 7
    outbox_max_bytes: Count = 8 * GiB
    #: On a machine whose CPU, not its disk, limits ingestion, compressing costs more than it saves.
    outbox_compression: Literal["on", "off"] = "off"
    #: At least 64 MiB (below that the store cannot hold its own tables), at most 64 TiB (the
    #: address space a process can map); rounded to whole pages.
    lmdb_map_size: Annotated[int, msgspec.Meta(ge=64 << 20, le=1 << 46)] = 256 * GiB
    flush_interval_secs: Seconds = 5.0
    flush_rows: PositiveCount = 50_000
    #: Threads writing one chunk's Parquet files; 0: one per core, at most four.
    export_writers: Annotated[int, msgspec.Meta(ge=0, le=64)] = 0
    #: The shipper rewrites a day's small files of about one size once this many have gathered;
    #: 0: never (``hogflare compact`` still does, on demand).
    compact_files: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 16

    pipeline_endpoint: str | None = None
    pipeline_auth_token: str | None = None
    persons_pipeline_endpoint: str | None = None
    persons_pipeline_auth_token: str | None = None
    pipeline_timeout_secs: PositiveSeconds = 10.0
    pipeline_max_body_bytes: PositiveCount = 1 * MB
    #: Each lane is a thread and a connection: a few dozen already saturate any link.
    pipeline_concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    sinks: str | None = None

    #: Bodies up to a terabyte, inflating at most a thousandfold: their product must fit in 64 bits.
    max_body_bytes: Annotated[int, msgspec.Meta(gt=0, le=1 << 40)] = 20 * MiB
    max_recording_body_bytes: Annotated[int, msgspec.Meta(gt=0, le=1 << 40)] = 25 * MiB
    inflate_ratio: Annotated[int, msgspec.Meta(gt=0, le=1000)] = 5
    max_event_bytes: PositiveCount = 1 * MB
    body_timeout_secs: PositiveSeconds = 10.0
    body_deadline_secs: PositiveSeconds = 300.0
    #: On SIGTERM: how long in-flight requests and the shipper's last flush may take.
    shutdown_timeout_secs: Seconds = 30.0

    shipper: Literal["auto", "off"] = "auto"
    store: Literal["on", "off"] = "on"
    log_format: Literal["console", "json"] = "console"
    log_level: str = "info"
    #: Dropped items and refused person updates are logged as one line per reason per interval.
    metrics_token: str | None = None
    log_summary_secs: Seconds = 10.0

    def takes_project(self, token: str) -> bool:
        """Whether this server serves the project of ``token`` (every one, unless
        ``HOGFLARE_PROJECT_TOKENS`` names them)."""
        return not self.project_tokens or token in self.project_tokens

    @property
    def worker_stop_secs(self) -> float:
        """The longest a worker's shutdown may take: the commits in flight, then the shipper's
        last delivery to every sink and one stream request it may be in the middle of."""
        return COMMIT_DRAIN_SECS + self.shutdown_timeout_secs + self.pipeline_timeout_secs + SHIPPER_STOP_GRACE_SECS

    @property
    def outbox_limit(self) -> int:
        """The outbox's high-water mark in effect: ``HOGFLARE_OUTBOX_MAX_BYTES``, and at most a
        quarter of the store's map. Freeing delivered rows writes to the store too: were the map
        to fill before the outbox did, nothing could be freed, and ingestion would stay refused."""
        return min(self.outbox_max_bytes, self.lmdb_map_size // 4)

    @property
    def group_types(self) -> list[str | None]:
        """Group types whose slot (0 to 4) is fixed; the others get a free slot on first sight."""
        return [self.group_type_0, self.group_type_1, self.group_type_2, self.group_type_3, self.group_type_4]

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def enabled_sinks(self) -> tuple[str, ...]:
        """``HOGFLARE_SINKS`` (``lake``, ``pipelines``), else the lake plus Pipelines when its endpoint is set."""
        if self.sinks is None:
            return ("lake", "pipelines") if self.pipeline_endpoint else ("lake",)
        names = tuple(dict.fromkeys(part.strip() for part in self.sinks.split(",") if part.strip()))
        unknown = [name for name in names if name not in SINKS]
        if unknown or not names:
            raise ConfigError(f"invalid setting: HOGFLARE_SINKS names {', '.join(SINKS)}, not {self.sinks!r}")
        if "pipelines" in names and not self.pipeline_endpoint:
            raise ConfigError(
                "invalid setting: HOGFLARE_SINKS has pipelines but CLOUDFLARE_PIPELINE_ENDPOINT is not set"
            )
        return names

    @property
    def geoip_paths(self) -> tuple[Path, ...] | None:
        """The GeoIP databases ``HOGFLARE_GEOIP_DB`` names (comma-separated; ``off`` or empty for
        none), or ``None`` when it is unset and the packaged database is used."""
        if self.geoip_db is None:
            return None
        if self.geoip_db.strip().lower() in ("", "off"):
            return ()
        paths = tuple(Path(part.strip()).expanduser() for part in self.geoip_db.split(",") if part.strip())
        for path in paths:
            if not path.is_file():
                raise ConfigError(f"invalid setting: HOGFLARE_GEOIP_DB: {path} is not a file (a .mmdb, or off)")
        return paths

    @property
    def flags_file(self) -> Path:
        """The flags file: ``HOGFLARE_FEATURE_FLAGS_FILE``, else ``flags.json`` in the data directory."""
        return self.feature_flags_file or self.data_dir / "flags.json"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from environment variables, then apply explicit overrides."""
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        for field, name in ENV.items():
            value = env.get(name)
            if value is None or value.strip() == "":
                continue
            if field in LIST_FIELDS:
                raw[field] = tuple(part.strip() for part in value.split(",") if part.strip())
                if not raw[field]:
                    # Commas and nothing else: a list meant to restrict that lost its entries
                    # (HOGFLARE_PROJECT_TOKENS=",", say) must not quietly allow everything.
                    raise ConfigError(f"invalid setting: {name} is set to {value!r}, which names nothing")
            else:
                raw[field] = value.strip()
        if not env.get(ENV["geoip_db"], "unset").strip():
            raw["geoip_db"] = "off"  # set but empty turns GeoIP off instead of meaning "unset"
        if "log_level" not in raw and (level := rust_log_level(env.get("RUST_LOG", ""))):
            raw["log_level"] = level
        raw.update({key: value for key, value in overrides.items() if value is not None})
        for field in ("data_dir", "feature_flags_file"):
            if field in raw:
                raw[field] = str(raw[field])
        try:
            settings = msgspec.convert(raw, cls, strict=False, dec_hook=_dec_hook)
        except msgspec.ValidationError as exc:
            raise ConfigError(_explain(exc)) from exc
        settings.enabled_sinks  # noqa: B018 - refuse a bad HOGFLARE_SINKS at startup
        if settings.persons_pipeline_endpoint and not settings.pipeline_endpoint:
            raise ConfigError(
                "invalid setting: CLOUDFLARE_PERSONS_PIPELINE_ENDPOINT is set without CLOUDFLARE_PIPELINE_ENDPOINT: "
                "person snapshots stream only beside the events"
            )
        parse_networks(settings.trusted_proxies)
        settings.geoip_paths  # noqa: B018 - refuse a missing HOGFLARE_GEOIP_DB file at startup
        settings._check_values()
        beyond = sorted(name for name, value in env.items() if _GROUP_SLOT.fullmatch(name) and value.strip())
        beyond = [name for name in beyond if name not in ENV.values()]
        if beyond:
            raise ConfigError(f"invalid setting: {beyond[0]}: PostHog's group type slots are 0 to 4")
        return settings

    def _check_values(self) -> None:
        """What the types let through: endless durations, and log levels logging does not know."""
        for field in self.__struct_fields__:
            value = getattr(self, field)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"invalid setting: {ENV[field]}: {value} is not a number of seconds")
        for field in ("pipeline_endpoint", "persons_pipeline_endpoint"):
            endpoint = getattr(self, field)
            if endpoint is not None and not _is_http_url(endpoint):
                raise ConfigError(f"invalid setting: {ENV[field]}: {endpoint!r} is not an http:// or https:// URL")
        named = [group_type for group_type in self.group_types if group_type]
        if len(named) != len(set(named)):
            slots = ", ".join(f"POSTHOG_GROUP_TYPE_{slot}={name}" for slot, name in enumerate(self.group_types) if name)
            raise ConfigError(f"invalid setting: a group type has one slot, not several: {slots}")
        for field, opens in (
            ("personal_api_keys", "flag definitions need a key of their own (phx_… or phs_…)"),
            ("project_secret_keys", "flag definitions need a key of their own (phx_… or phs_…)"),
            ("person_api_keys", "persons need a key of their own (phx_…)"),
        ):
            public = [key for key in getattr(self, field) if key.startswith("phc_") or key in self.project_tokens]
            if public:
                raise ConfigError(
                    f"invalid setting: {ENV[field]}: {public[0]!r} is a project token, which every page that "
                    f"loads posthog-js shows; {opens}"
                )
        if self.log_level.lower() not in LOG_LEVELS:
            choices = ", ".join(LOG_LEVELS)
            raise ConfigError(f"invalid setting: HOGFLARE_LOG_LEVEL: {self.log_level!r} is not one of {choices}")

    def to_env(self) -> dict[str, str]:
        """The environment that makes another process (a worker, the shipper) see these settings."""
        out: dict[str, str] = {}
        for field, name in ENV.items():
            value = getattr(self, field)
            if value is None:
                continue
            out[name] = ",".join(value) if field in LIST_FIELDS else str(value)
        return out


#: ``POSTHOG_GROUP_TYPE_<n>``: PostHog has five slots, and a sixth set by mistake must not vanish.
_GROUP_SLOT = re.compile(r"POSTHOG_GROUP_TYPE_\d+")


#: tracing's levels, as the logging levels hogflare has.
_RUST_LOG_LEVELS = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "error": "error",
    "off": "critical",
}


def rust_log_level(rust_log: str) -> str | None:
    """Hogflare's own level in a ``RUST_LOG`` filter, which Hogflare's server read for its logging:
    its ``hogflare=`` directive, else one for a module of it, else a bare level (``RUST_LOG=warn``);
    ``None`` when the filter names none of these."""
    found: dict[str, str] = {}
    for directive in rust_log.split(","):
        target, _, level = (part.strip() for part in directive.rpartition("="))
        if level.lower() not in _RUST_LOG_LEVELS:
            continue
        kind = "crate" if target == "hogflare" else "module" if target.startswith("hogflare::") else target
        if kind in ("crate", "module", ""):
            found.setdefault(kind, _RUST_LOG_LEVELS[level.lower()])
    return found.get("crate") or found.get("module") or found.get("")


def _is_http_url(text: str) -> bool:
    try:
        url = urlsplit(text.strip())
        return url.scheme in ("http", "https") and bool(url.hostname) and (url.port is None or url.port > 0)
    except ValueError:
        return False


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``HOGFLARE_TRUSTED_PROXIES``' addresses and CIDRs; a ``ConfigError`` names a bad one."""
    networks: list[Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"invalid setting: HOGFLARE_TRUSTED_PROXIES: {value!r} is not an address or CIDR"
            ) from None
    return tuple(networks)


def _dec_hook(kind: type, value: Any) -> Any:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise TypeError(f"cannot read {value!r} as {kind.__name__}")


SINKS = ("lake", "pipelines")


class ConfigError(ValueError):
    """A setting has a value hogflare cannot use."""


ENV: dict[str, str] = {
    "data_dir": "HOGFLARE_DATA_DIR",
    "project_tokens": "HOGFLARE_PROJECT_TOKENS",
    "team_id": "POSTHOG_TEAM_ID",
    "api_key": "POSTHOG_API_KEY",
    "session_recording_endpoint": "POSTHOG_SESSION_RECORDING_ENDPOINT",
    "autocapture_exceptions": "HOGFLARE_AUTOCAPTURE_EXCEPTIONS",
    "person_debug_token": "PERSON_DEBUG_TOKEN",
    "error_admin_token": "HOGFLARE_ERROR_ADMIN_TOKEN",
    **{f"group_type_{slot}": f"POSTHOG_GROUP_TYPE_{slot}" for slot in range(5)},
    "feature_flags": "HOGFLARE_FEATURE_FLAGS",
    "feature_flags_file": "HOGFLARE_FEATURE_FLAGS_FILE",
    "personal_api_keys": "HOGFLARE_PERSONAL_API_KEYS",
    "project_secret_keys": "HOGFLARE_PROJECT_SECRET_KEYS",
    "person_api_keys": "HOGFLARE_PERSON_API_KEYS",
    "signing_secret": "POSTHOG_SIGNING_SECRET",
    "signature_tolerance_secs": "HOGFLARE_SIGNATURE_TOLERANCE_SECS",
    "trusted_proxies": "HOGFLARE_TRUSTED_PROXIES",
    "store_ip": "HOGFLARE_STORE_IP",
    "geoip_db": "HOGFLARE_GEOIP_DB",
    "cookieless_mode": "HOGFLARE_COOKIELESS_MODE",
    "dedupe_window_days": "HOGFLARE_DEDUPE_WINDOW_DAYS",
    "outbox_max_bytes": "HOGFLARE_OUTBOX_MAX_BYTES",
    "outbox_compression": "HOGFLARE_OUTBOX_COMPRESSION",
    "lmdb_map_size": "HOGFLARE_LMDB_MAP_SIZE",
    "flush_interval_secs": "HOGFLARE_FLUSH_INTERVAL_SECS",
    "flush_rows": "HOGFLARE_FLUSH_ROWS",
    "export_writers": "HOGFLARE_EXPORT_WRITERS",
    "compact_files": "HOGFLARE_COMPACT_FILES",
    "pipeline_endpoint": "CLOUDFLARE_PIPELINE_ENDPOINT",
    "pipeline_auth_token": "CLOUDFLARE_PIPELINE_AUTH_TOKEN",
    "persons_pipeline_endpoint": "CLOUDFLARE_PERSONS_PIPELINE_ENDPOINT",
    "persons_pipeline_auth_token": "CLOUDFLARE_PERSONS_PIPELINE_AUTH_TOKEN",
    "pipeline_timeout_secs": "CLOUDFLARE_PIPELINE_TIMEOUT_SECS",
    "pipeline_max_body_bytes": "HOGFLARE_PIPELINE_MAX_BODY_BYTES",
    "pipeline_concurrency": "HOGFLARE_PIPELINE_CONCURRENCY",
    "sinks": "HOGFLARE_SINKS",
    "max_body_bytes": "HOGFLARE_MAX_BODY_BYTES",
    "max_recording_body_bytes": "HOGFLARE_MAX_RECORDING_BODY_BYTES",
    "inflate_ratio": "HOGFLARE_INFLATE_RATIO",
    "max_event_bytes": "HOGFLARE_MAX_EVENT_BYTES",
    "body_timeout_secs": "HOGFLARE_BODY_TIMEOUT_SECS",
    "body_deadline_secs": "HOGFLARE_BODY_DEADLINE_SECS",
    "shutdown_timeout_secs": "HOGFLARE_SHUTDOWN_TIMEOUT_SECS",
    "shipper": "HOGFLARE_SHIPPER",
    "store": "HOGFLARE_STORE",
    "log_format": "HOGFLARE_LOG_FORMAT",
    "log_level": "HOGFLARE_LOG_LEVEL",
    "log_summary_secs": "HOGFLARE_LOG_SUMMARY_SECS",
    "metrics_token": "HOGFLARE_METRICS_TOKEN",
}

LIST_FIELDS = frozenset(
    {"project_tokens", "personal_api_keys", "project_secret_keys", "person_api_keys", "trusted_proxies"}
)


def _explain(exc: msgspec.ValidationError) -> str:
    message = str(exc)
    # msgspec says "at `$.flush_interval_secs`"; users know the variable, not the field.
    for field, name in ENV.items():
        message = message.replace(f"`$.{field}`", name)
    return f"invalid setting: {message}"
