"""The Rust core of hogflare. Each call takes a whole request body or a whole commit."""

from collections.abc import Sequence
from os import PathLike
from typing import Any, Self, final

__all__ = [
    "UNMEASURED_COLUMNS",
    "AuthError",
    "Batch",
    "CommitThread",
    "Decoder",
    "Export",
    "FinishedCommit",
    "FlagSet",
    "GeoIpDatabase",
    "HashKeyOverrideWrite",
    "HogflareError",
    "NoValidEventError",
    "OutboxFullError",
    "PayloadError",
    "PayloadTooLargeError",
    "PipelineChunk",
    "SignatureVerifier",
    "StorageError",
    "Store",
    "__version__",
    "project_token",
    "rewrite_parquet",
]

__version__: str

#: The columns of JSON text, written without min/max statistics or a dictionary.
UNMEASURED_COLUMNS: tuple[str, ...]

def rewrite_parquet(table: str, inputs: Sequence[str | PathLike[str]], output: str | PathLike[str]) -> tuple[int, int]:
    """Write the rows of ``inputs`` (Parquet files of the lake table ``table``), in order, to one
    new file at ``output`` with the shipper's writer settings, a slice at a time; returns
    ``(rows, bytes)``. Raises ``StorageError`` when an input cannot be read or the output
    written, leaving nothing at ``output``."""

def project_token(raw: str) -> str | None:
    """``raw`` trimmed, as capture takes a project token, or ``None`` when capture would refuse
    it (empty, over 64 characters, not ASCII, a personal API key, or holding NUL)."""

class HogflareError(Exception):
    """Base class of every hogflare error."""

class PayloadError(HogflareError):
    """The request body is not a PostHog payload (400)."""

class PayloadTooLargeError(PayloadError):
    """The payload is bigger than hogflare accepts (413)."""

class NoValidEventError(PayloadError):
    """Every event of the request was dropped (400); `dropped` counts them by reason."""

    dropped: dict[str, int]
    token: str

class AuthError(HogflareError):
    """The project token is missing or refused, or the request is not signed as required (401)."""

class StorageError(HogflareError):
    """The store cannot take the events now; retry (503)."""

class OutboxFullError(StorageError):
    """Rows wait for delivery past the high-water mark (503)."""

@final
class Decoder:
    """Decodes PostHog request bodies: every encoding, envelope and SDK shape."""

    def __new__(
        cls,
        *,
        max_inflated_bytes: int,
        max_event_bytes: int,
        team_id: int | None = None,
        project_tokens: Sequence[str] | None = None,
        geoip_db: Sequence[str | PathLike[str]] | None = None,
        cookieless_mode: str = "stateful",
    ) -> Self:
        """``geoip_db``: MaxMind DB files (GeoIP2/GeoLite2 City or DB-IP Lite City layout) to
        locate events from, mapped into memory once; none turns GeoIP off. Raises ``ValueError``
        for a file that cannot be read as one. ``cookieless_mode``: how events posthog-js sends
        with ``cookieless_mode`` are named (``stateful``, ``stateless``, ``disabled``)."""
    def decode(
        self,
        route: str,
        body: bytes,
        *,
        query: bytes | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        api_key: str | None = None,
        sent_at: str | None = None,
        sdk_info: str | None = None,
        client_ip: str | None = None,
        geoip_ip: str | None = None,
        cf_ray: str | None = None,
        country_code: str | None = None,
        now: float | None = None,
        detach: bool = False,
    ) -> Batch:
        """Decode one request. ``route`` is one of ``event``, ``legacy``, ``engage``, ``identify``,
        ``alias``, ``groups``, ``recording``, ``analytics_v1`` (capture v1: ``api_key`` is the
        bearer token, ``sent_at`` its ``PostHog-Request-Timestamp``, ``sdk_info`` its
        ``PostHog-Sdk-Info``); ``now`` (epoch seconds) defaults to the clock;
        ``detach`` releases the GIL while decoding (for large bodies, off the event loop).
        ``client_ip`` (``$ip``), ``cf_ray`` (``cf_ray``) and ``country_code``
        (``$geoip_country_code``, when no database locates the event) are added to each event
        that lacks them; ``capture_internal`` events get ``127.0.0.1`` and ``$geoip_disable``
        ones no location. With a GeoIP database, each event is located by its own ``$ip``, else
        by ``geoip_ip`` (else ``client_ip``), and gets the ``$geoip_*`` properties it lacks, the
        same in ``$set`` and as ``$initial_geoip_*`` in ``$set_once`` unless the client set them.

        Raises ``PayloadError``, ``PayloadTooLargeError`` or ``AuthError``."""
    def own_event(
        self, token: str, event: str, distinct_id: str, properties: str, *, now: float | None = None
    ) -> Batch:
        """An event hogflare writes itself (an admin route's), timestamped ``now``: its row's
        ``source`` is ``hogflare``, and it has no person and no enrichment. ``properties`` is a
        JSON object's text. Raises ``AuthError`` for a token capture would refuse."""

@final
class Batch:
    """The normalised events of one request, held in Rust until a store commits them."""

    @property
    def token(self) -> str: ...
    @property
    def accepted(self) -> int:
        """Events that will be stored (before deduplication)."""
    @property
    def filtered(self) -> int:
        """Items discarded on purpose, as PostHog does (``$performance_event``)."""
    @property
    def dropped(self) -> dict[str, int]:
        """Items refused, by reason."""
    @property
    def warnings(self) -> dict[str, int]:
        """Items corrected on the way in, by kind."""
    @property
    def results(self) -> str | None:
        """Capture v1's answer (JSON), every event's verdict; ``None`` for the other routes."""

@final
class CommitThread:
    """The store's writer on a thread of its own, which never takes the GIL. Each commit takes
    every batch submitted by the time it holds the store's write lock; when ``fileno()`` becomes
    readable, ``finished`` gives the outcomes, by the tickets ``submit`` returned."""

    def __new__(cls, store: Store, *, dedupe_window_days: int, max_outbox_bytes: int) -> Self: ...
    def submit(self, batch: Batch) -> int:
        """Queue a batch for the next commit; returns its ticket. Raises ``StorageError`` once stopped."""
    def fileno(self) -> int:
        """A socket that becomes readable when a commit has finished."""
    def finished(self) -> list[FinishedCommit]:
        """The commits finished since the last call, oldest first."""
    def stop(self, timeout: float | None = None) -> bool:
        """Finish the commits queued, then stop the thread, waiting at most ``timeout`` seconds
        when given: whether the thread has ended (one that has not is left to finish alone)."""

@final
class FinishedCommit:
    """One commit the ``CommitThread`` finished."""

    @property
    def tickets(self) -> list[int]:
        """The tickets of the batches committed, in the order of ``outcomes()``."""
    @property
    def seconds(self) -> float:
        """From asking for the store's write lock until the commit was on disk and handed over
        to be answered (its meta page flushed by the next commit, or by a sync of its own)."""
    @property
    def sync_seconds(self) -> float:
        """Writing and syncing its pages (and the sync made for it when nothing followed it),
        part of ``seconds``."""
    def outcomes(self) -> list[tuple[int, int, dict[str, int]]]:
        """``(stored, duplicates, warnings)`` per ticket.

        Raises ``OutboxFullError`` above the high-water mark, ``StorageError`` on store trouble;
        then nothing of the commit was stored."""

@final
class Store:
    """The LMDB store under ``<data_dir>/store``: outbox, persons, groups, seen uuids, cursors."""

    def __new__(
        cls,
        path: str | PathLike[str],
        *,
        map_size: int | None = None,
        max_readers: int | None = None,
        group_types: Sequence[str | None] | None = None,
        compress_outbox: bool = False,
    ) -> Self:
        """``compress_outbox``: whether commits compress outbox entries with the store's
        dictionary (entries compressed before are read either way)."""
    @property
    def path(self) -> str: ...
    @property
    def id(self) -> str:
        """The store's id (a uuid), chosen when it was created; the lake records it beside each
        outbox position it commits."""
    def commit(
        self, batches: Sequence[Batch], *, dedupe_window_days: int, max_outbox_bytes: int, now: float | None = None
    ) -> list[tuple[int, int, dict[str, int]]]:
        """Commit batches in one synced transaction, with the person and group changes they make;
        ``(stored, duplicates, warnings)`` per batch, ``warnings`` counting refused merges and the like.

        Raises ``OutboxFullError`` above the high-water mark, ``StorageError`` on store trouble."""
    def outbox_state(self) -> tuple[int, int, int]:
        """``(next_seq, rows, bytes)`` of the outbox; ``bytes`` as stored (compressed)."""
    def outbox_dictionary(self) -> int | None:
        """The number of the dictionary new outbox entries are compressed with; ``None`` until
        the store has made its first (from the first ~1,500 entries its sinks read)."""
    def counts(self) -> tuple[int, int, int]:
        """``(persons, distinct_ids, groups)`` over every project, from LMDB's statistics (no scan)."""
    def pending_since(self, after: int) -> float | None:
        """When the oldest outbox row after ``after`` reached the store (epoch seconds), or ``None``."""
    def last_sync_secs(self) -> float:
        """Seconds the last ``commit`` spent writing and syncing its transaction."""
    def export(
        self,
        after: int,
        *,
        events_upto: int,
        persons_upto: int,
        max_rows: int,
        max_bytes: int,
        events_dir: str | PathLike[str],
        persons_dir: str | PathLike[str],
        writers: int | None = None,
    ) -> Export:
        """Write the outbox entries after ``after`` to Parquet files, one or more per table and day, on
        up to ``writers`` threads (``None`` or 0: one per core, at most four); entries at or below a
        table's ``*_upto`` are already in it and are left out."""
    def pipeline(
        self, after: int, *, max_rows: int, max_bytes: int, max_body_bytes: int, lanes: int, persons: bool
    ) -> PipelineChunk:
        """The outbox entries after ``after`` as Cloudflare Pipelines POST bodies: JSON arrays of at
        most ``max_body_bytes`` (never empty) of Hogflare's event rows and, when ``persons``, its
        person snapshot rows, each stream apart. Each stream's bodies come in at most ``lanes``
        lanes: all rows of a distinct id (events) or a person (snapshots) share one lane, in order."""
    def person(self, token: str | None, distinct_id: str) -> dict[str, Any] | None:
        """The person a distinct id belongs to in the project of ``token`` (any project when
        ``None``); ``properties`` and ``properties_set_once`` are JSON text."""
    def person_properties(self, token: str, distinct_id: str) -> str | None:
        """All the properties of the person ``distinct_id`` belongs to, as JSON object text;
        ``None`` when the distinct id has no person. Never creates one."""
    def hash_keys(self, token: str, distinct_id: str) -> dict[str, str]:
        """Experience continuity's hash keys stored for the person ``distinct_id`` belongs to,
        ``{flag key: hash key}``."""
    def group_properties(self, token: str, groups: str) -> str:
        """``{type: {properties}}`` (JSON text) for the groups named in the JSON ``{type: key}``;
        a group never identified gives ``{}``."""
    def group_type_conflicts(self) -> list[tuple[str, str | None, int]]:
        """``(project token, stored group type, its slot)`` for each stored group type that the
        store's ``group_types`` contradict: its slot configured for another type, or it configured
        for another slot. The type is ``None`` when its name was too long to be kept."""
    def trim_outbox(self, upto: int, *, limit: int = 10_000) -> int:
        """Forget rows up to ``upto`` (every sink has them), at most ``limit`` in one transaction."""
    def cursor(self, sink: str) -> int | None: ...
    def set_cursor(self, sink: str, seq: int) -> None: ...
    def first_position(self) -> int:
        """The position of the first row still in the outbox, or the next row's when it is empty."""
    def advance_outbox(self, past: int) -> bool:
        """Number the next rows after position ``past`` unless the outbox is already beyond it;
        returns whether it moved. For a store restored from a backup older than the lake."""
    def expire_seen(self, *, window_days: int, limit: int, now: float | None = None) -> int: ...
    def maintain_cookieless(self, *, now: float | None = None) -> int:
        """Forget cookieless mode's salts of days no place on earth is in any more, and the
        identifies and sessions made with them, and make the salts of the days in use; how many
        entries changed."""
    def check(self) -> None: ...

@final
class Export:
    """What ``Store.export`` did."""

    @property
    def positions(self) -> int:
        """Outbox positions read, one per row."""
    @property
    def last_seq(self) -> int:
        """The outbox position the export reached."""
    @property
    def files(self) -> list[tuple[str, int, str, int, int]]:
        """``(table, day, path, rows, bytes)`` of each file written; ``day`` counts days since 1970-01-01."""

@final
class PipelineChunk:
    """What ``Store.pipeline`` read."""

    @property
    def positions(self) -> int:
        """Outbox positions read, one per row."""
    @property
    def last_seq(self) -> int:
        """The outbox position the chunk reached."""
    @property
    def event_rows(self) -> int: ...
    @property
    def person_rows(self) -> int: ...
    @property
    def oversized(self) -> int:
        """Rows bigger than the body limit on their own, each sent alone."""
    @property
    def events(self) -> list[list[bytes]]:
        """Bodies for the events stream, lane by lane (lanes without rows left out)."""
    @property
    def persons(self) -> list[list[bytes]]:
        """Bodies for the persons stream, lane by lane (lanes without rows left out)."""

@final
class FlagSet:
    """Every flag hogflare evaluates, compiled once. Immutable; share it freely between requests."""

    @staticmethod
    def compile(hogflare: str | None = None, definitions: str | None = None) -> tuple[FlagSet, list[str]]:
        """Compile Hogflare's ``HOGFLARE_FEATURE_FLAGS`` JSON text (an array, or ``{"flags": [...],
        "group_type_mapping": {...}}``) and the flags file text (PostHog's local-evaluation document
        ``{"flags": [...], "group_type_mapping": {...}, "cohorts": {...}}``, or a bare array of PostHog
        flag objects). Returns the set and one plain-words message per problem: a bad flag is left out
        with a message; an unreadable document gives one message and contributes no flags. Flags from
        both sources are kept; on the same key the file wins."""
    def __len__(self) -> int: ...
    def keys(self) -> list[str]: ...
    def has_active_flags(self) -> bool: ...
    def group_type_mapping(self) -> dict[str, str]:
        """``{"0": "company", ...}``"""
    def definitions(self) -> bytes:
        """PostHog's local-evaluation document for every flag the SDKs can evaluate themselves
        (payloads as JSON strings), with ``group_type_mapping`` and ``cohorts``."""
    def remote_config_payload(self, key_or_id: str) -> str | None:
        """The JSON answer for a remote config flag's ``"true"`` payload (a JSON string, or
        ``null``), by key or id; ``None`` when no remote config flag has that key or id."""
    def respond(
        self,
        distinct_id: str,
        *,
        request_id: str | None = None,
        decide: bool = False,
        version: int | None = None,
        evaluate: bool = True,
        stored_person: str | None = None,
        stored_groups: str | None = None,
        person_properties: str = "{}",
        groups: str = "{}",
        group_properties: str = "{}",
        anon_distinct_id: str | None = None,
        hash_keys: dict[str, str] | None = None,
        device_id: str | None = None,
        flag_keys: list[str] | None = None,
        environments: list[str] | None = None,
        now: float | None = None,
    ) -> bytes:
        """The whole ``/flags`` (``decide=False``) or ``/decide`` answer body for one user, every
        flag evaluated in one call (the GIL released only for sets of over 200 flags).
        Properties are JSON object text (``group_properties`` is ``{type: {properties}}``,
        ``groups`` is ``{type: key}``); the request's override the stored ones (``stored_person``,
        ``stored_groups`` as the store returns them), ``$group_key`` joins each group's and
        ``distinct_id`` the person's; ``hash_keys`` are experience continuity's stored hash keys
        (``Store.hash_keys``).
        The shape is PostHog's ``get_versioned_response`` for ``version``
        (``/flags``, ``/decide?v>=4``: the v2 ``flags`` map with ``featureFlags`` and
        ``featureFlagPayloads``; ``/decide`` v1: keys of the flags that are on; v2: their values;
        v3: every value and the payloads). ``evaluate=False`` answers with no flags. ``requestId``
        is ``request_id`` or a new UUID; ``evaluatedAt`` is ``now`` in milliseconds."""

    def answer(
        self,
        body: bytes,
        *,
        store: Store | None = None,
        project_tokens: list[str] | None = None,
        decide: bool = False,
        version: int | None = None,
        request_id: str | None = None,
        now: float | None = None,
        visitor: tuple[str, str | None, str | None, str | None] | None = None,
        geoip: GeoIpDatabase | None = None,
        client_ip: str | None = None,
    ) -> tuple[int, bytes, HashKeyOverrideWrite | None] | None:
        """A ``/flags`` or ``/decide`` POST body (JSON, already inflated or decoded) answered in
        one call: read with each field's alias, its token checked against ``project_tokens``,
        the person and groups read from ``store``, every flag evaluated as ``respond`` does.
        ``(200, answer, remember)``, or ``(401, reason, None)`` for a missing or refused token;
        ``None`` when the body is not strict JSON (it may still be JSON5 or base64). Raises
        ``PayloadError`` for a body of the wrong shape, nested too deeply, or without
        ``distinct_id``. ``remember`` is experience continuity's write of the request's
        ``$anon_distinct_id`` as its persons' hash key, when one is due: the answer is already
        what it will be after it. ``visitor``: the cookieless mode, the client's address, the
        request's ``Origin`` and ``User-Agent``; with it, a request for ``$posthog_cookieless``
        is answered for the id the visitor's events get. With ``geoip`` and ``client_ip``, the
        ``$geoip_*`` person properties the request lacks (or sends as null) are filled from
        where that address is, unless the body says ``geoip_disable``, as PostHog's service does."""

@final
class GeoIpDatabase:
    """MaxMind DB files (GeoIP2/GeoLite2 City layout, or DB-IP's), mapped once and asked in order."""

    def __new__(cls, paths: Sequence[str | PathLike[str]]) -> Self:
        """Raises ``ValueError`` naming a file that is missing or not a database."""

@final
class HashKeyOverrideWrite:
    """A ``/flags`` request's anonymous id, to be stored as the hash key of the flags with
    experience continuity that its persons have none for yet."""

    def write(self) -> None:
        """Store it, waiting for the store's write lock with the GIL released; raises
        ``StorageError`` when the store refuses."""

@final
class SignatureVerifier:
    """Checks request signatures: an HMAC of the raw body with the shared secret.

    ``X-POSTHOG-SIGNATURE`` is ``sha256=<hex>`` or bare hex (sha256); ``X-HUB-SIGNATURE`` is
    ``sha1=<hex>`` or bare hex (sha1); either valid one is enough. With ``tolerance_secs``, the
    client also sends ``X-POSTHOG-TIMESTAMP`` (unix seconds) and signs ``<timestamp>.<body>``."""

    def __new__(cls, secret: bytes, *, tolerance_secs: int | None = None) -> Self: ...
    def verify(
        self,
        body: bytes,
        *,
        posthog_signature: str | None = None,
        hub_signature: str | None = None,
        timestamp: str | None = None,
        now: float | None = None,
    ) -> None:
        """Return when a header carries a valid signature of ``body``, compared in constant time.

        Raises ``AuthError``: ``missing signature header``, ``signature verification failed``,
        ``missing signature timestamp header`` or ``signature timestamp outside the tolerance
        window``."""
