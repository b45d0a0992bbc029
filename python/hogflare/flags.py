"""The flags hogflare serves: compiled from ``HOGFLARE_FEATURE_FLAGS`` and the flags file, the file
reloaded when it changes, and evaluated for one user with the person and group properties the store
holds under the ones the request sends.

A bad flag is reported and left out; the others are served. A flags file that no longer reads at
all (half written, broken JSON) keeps the flags it gave before, and says why.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import structlog

from hogflare._hogflare import FlagSet, Store
from hogflare.config import Settings
from hogflare.models import Evaluation, FlagSummary

log = structlog.get_logger("hogflare.flags")

ENV_SOURCE = "HOGFLARE_FEATURE_FLAGS"
#: How often, at most, a request looks at the flags file for changes.
CHECK_INTERVAL_SECS = 1.0

#: Called with ``(source, message)`` for every problem found while loading flags.
ProblemSink = Callable[[str, str], None]
#: ``(mtime_ns, size, inode)`` of the flags file, or ``None`` when there is none.
Stamp = tuple[int, int, int] | None

_decode_evaluation = msgspec.json.Decoder(Evaluation).decode
_encode = msgspec.json.Encoder().encode
NO_FLAGS = Evaluation(flags={})


def env_flags_unusable(settings: Settings) -> str | None:
    """Why ``HOGFLARE_FEATURE_FLAGS`` gives no flag at all though it is set to some (not JSON, not
    a list of flags, every flag broken), else ``None``. Unlike the flags file, it cannot be
    mended while the server runs: a server started with it would answer every flag off."""
    text = settings.feature_flags
    if text is None:
        return None
    flags, problems = FlagSet.compile(hogflare=text)
    if len(flags):
        return None
    if problems:
        return _without_source(problems[0])
    document = msgspec.json.decode(text)
    if document in ([], {}) or (isinstance(document, dict) and document.get("flags") == []):
        return None
    return 'no flag in it: expected a JSON array of flags, or {"flags": [...]}'


def _log_problem(source: str, message: str) -> None:
    log.warning("feature flag problem", source=source, problem=message)


class FlagsService:
    """The current flag set of one process, and evaluation against it."""

    def __init__(self, settings: Settings, store: Store | None = None, *, report: ProblemSink = _log_problem) -> None:
        self.store = store
        self.path: Path = settings.flags_file
        self._path_given = settings.feature_flags_file is not None
        self._env_text = settings.feature_flags
        self._report = report
        self._seen: set[str] = set()
        self.problems: list[tuple[str, str]] = []
        self.file_keys: frozenset[str] = frozenset()
        self._file_text: str | None = None
        self._stamp: Stamp = None
        #: The stamp of the flags file when it was last found empty, its old flags still served.
        self._emptied: Stamp = None
        self._next_check = 0.0
        self._definitions: tuple[bytes, str] | None = None
        if self._env_text is not None:
            _, problems = FlagSet.compile(hogflare=self._env_text)
            self._problems(ENV_SOURCE, problems)
        self._flags = self._combine()
        self._check_file(first=True)

    @property
    def configured(self) -> bool:
        """Whether any flags were asked for: the variable is set, or a flags file exists or was named."""
        return self._env_text is not None or self._path_given or self._stamp is not None

    def current(self) -> FlagSet:
        """The flag set to answer with, after picking up a changed flags file (checked once a second)."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + CHECK_INTERVAL_SECS
            self._check_file()
        return self._flags

    def definitions(self) -> tuple[bytes, str]:
        """The local-evaluation document of the current flags and its ``ETag``."""
        flags = self.current()
        if self._definitions is None:
            body = flags.definitions()
            self._definitions = (body, f'"{hashlib.sha256(body).hexdigest()[:32]}"')
        return self._definitions

    def evaluate(self, token: str | None, distinct_id: str, **request: Any) -> Evaluation:
        """Every flag for one user (the v2 ``flags`` map), as ``/flags`` evaluates them; without a
        token, only the properties given count (``hogflare flags eval``)."""
        flags = self.current()
        if not len(flags):
            return NO_FLAGS
        # The v2 answer holds the ``flags`` map; decoding it reads only what ``Evaluation`` names.
        return _decode_evaluation(flags.respond(distinct_id, **self._arguments(token, distinct_id, **request)))

    def _arguments(
        self,
        token: str | None,
        distinct_id: str,
        *,
        person_properties: dict[str, Any] | None = None,
        groups: dict[str, str] | None = None,
        group_properties: dict[str, dict[str, Any] | None] | None = None,
        **rest: Any,
    ) -> dict[str, Any]:
        """``FlagSet`` keyword arguments: the stored properties as the store keeps them (JSON
        text), the request's encoded once; the core merges them."""
        arguments = dict(rest)
        store = self.store if token is not None else None
        if store is not None and token is not None:
            arguments["stored_person"] = store.person_properties(token, distinct_id)
            arguments["hash_keys"] = store.hash_keys(token, distinct_id) or None
        if person_properties:
            arguments["person_properties"] = _encode(person_properties).decode()
        if groups:
            encoded_groups = _encode(groups).decode()
            arguments["groups"] = encoded_groups
            if store is not None and token is not None:
                arguments["stored_groups"] = store.group_properties(token, encoded_groups)
            if group_properties:
                arguments["group_properties"] = _encode(group_properties).decode()
        return arguments

    # --- loading ---------------------------------------------------------------------------------

    def _problems(self, source: str, messages: list[str]) -> None:
        for message in messages:
            self._seen.add(message)
            plain = _without_source(message)
            self.problems.append((source, plain))
            self._report(source, plain)

    def _combine(self) -> FlagSet:
        flags, problems = FlagSet.compile(hogflare=self._env_text, definitions=self._file_text)
        # Each source's own problems were reported when it was read; only what the two cause together is new.
        self._problems("flags", [message for message in problems if message not in self._seen])
        self._definitions = None
        return flags

    def _check_file(self, *, first: bool = False) -> None:
        source = str(self.path)
        try:
            info = os.stat(self.path)
            stamp: Stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        except FileNotFoundError:
            stamp = None
        except OSError as exc:
            if first:
                self._problems(source, [f"cannot read the flags file: {exc.strerror}"])
            return
        if stamp == self._stamp and not first and self._emptied is None:
            return
        self._stamp = stamp
        self.problems = [problem for problem in self.problems if problem[0] != source]
        if stamp is None:
            self._emptied = None
            if first and self._path_given:
                self._problems(source, ["the flags file does not exist (HOGFLARE_FEATURE_FLAGS_FILE)"])
            elif self._file_text is not None:
                log.info("flags file removed; its flags are no longer served", source=source)
                self._replace_file(None, frozenset())
            return
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeError) as exc:
            self._problems(source, [f"cannot read the flags file: {exc}"])
            return
        if not text.strip() and self._file_text is not None and self._emptied != stamp:
            # Most editors, and a shell's `>`, empty a file before writing it again: keep the
            # flags it gave until the next check. A file still empty then is meant to be.
            self._emptied = stamp
            return
        self._emptied = None
        file_flags, problems = FlagSet.compile(definitions=text)
        if problems and not len(file_flags) and self._file_text is not None:
            self._problems(source, problems)
            kept = len(self.file_keys)
            self._problems(source, [f"the file gave no flags; the {kept} flags it gave before are still served"])
            return
        self._problems(source, problems)
        self._replace_file(text, frozenset(file_flags.keys()))
        if not first:
            log.info("flags file reloaded", source=source, flags=len(self.file_keys), problems=len(problems))

    def _replace_file(self, text: str | None, keys: frozenset[str]) -> None:
        self._file_text = text
        self.file_keys = keys
        self._flags = self._combine()

    def source_of(self, key: str) -> str:
        """Where a flag comes from: the file wins over the variable on the same key."""
        return str(self.path) if key in self.file_keys else ENV_SOURCE

    def summaries(self) -> list[FlagSummary]:
        """Each flag served: whether it is active, its type, its source, and whether SDKs can evaluate it locally."""
        flags = self.current()
        local = {flag.get("key"): flag for flag in _flag_objects(self.definitions()[0])}
        raw = {flag.get("key"): flag for flag in _flag_objects((self._env_text or "").encode())}
        out = []
        keys = flags.keys()
        for key in keys:
            flag = local.get(key) or raw.get(key) or {}
            out.append(
                FlagSummary(
                    key=key,
                    active=flag.get("active") is not False,
                    type=_flag_type(flag),
                    source=self.source_of(key),
                    local=key in local,
                )
            )
        return out


def _without_source(message: str) -> str:
    """A compile message without the source name it may start with (the caller names the source)."""
    for prefix in (f"{ENV_SOURCE}: ", "flags file: "):
        if message.startswith(prefix):
            return message.removeprefix(prefix).rstrip()
    return message.rstrip()


def _flag_objects(text: bytes) -> list[dict[str, Any]]:
    """The flag objects of a flags document (``{"flags": [...]}`` or a bare array), best effort."""
    try:
        document = msgspec.json.decode(text) if text.strip() else []
    except msgspec.DecodeError:
        return []
    flags = document.get("flags") if isinstance(document, dict) else document
    return [flag for flag in flags if isinstance(flag, dict)] if isinstance(flags, list) else []


def _flag_type(flag: dict[str, Any]) -> str:
    filters = flag.get("filters")
    filters = filters if isinstance(filters, dict) else {}
    multivariate = filters.get("multivariate")
    multivariate = multivariate if isinstance(multivariate, dict) else {}
    if flag.get("type") == "multivariate" or flag.get("variants") or multivariate.get("variants"):
        return "multivariate"
    return "boolean"
