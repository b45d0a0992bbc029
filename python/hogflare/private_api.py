"""The part of PostHog's private API that integrators read with a personal API key: the project
(``GET /api/projects/@current/``) and a person by distinct id (``GET /api/projects/<id>/persons/
?distinct_id=…``), each also under ``/api/environments/``. Hogsend, for one, discovers the
project this way and reads a person's properties (their time zone, the conditions of its
journeys) before it acts.

A hogflare server is one PostHog project: its id is ``POSTHOG_TEAM_ID`` (1 when unset), its
token the first of ``HOGFLARE_PROJECT_TOKENS``, and a person is looked up in the projects of the
configured tokens in turn (in any project when none is configured). Persons are read from the
store, so a ``$set`` acknowledged a moment ago is already there. The keys are
``HOGFLARE_PERSON_API_KEYS``, apart from the flag definitions' keys: those are handed to every
server that evaluates flags, and PostHog scopes persons apart (``person:read``) too.
"""

from __future__ import annotations

import hmac
import re
import uuid
from typing import Any

import msgspec

from hogflare._hogflare import Store
from hogflare.config import Settings
from hogflare.http import Request, Response
from hogflare.models import ApiError

#: The prefixes PostHog serves its project-scoped API under (projects, and environments since
#: PostHog split a project into environments).
_SCOPES = ("projects", "environments")
#: The person properties PostHog shows as a person's name, in order, before a distinct id.
_DISPLAY_NAME_PROPERTIES = ("email", "Email", "$email", "name", "Name", "username", "Username", "UserName")
_HOGFLARE = uuid.UUID("3c4f0b5e-8a61-4e27-9d0c-6f1b2a7e9d40")
#: What PostHog takes for an anonymous id when it orders a person's distinct ids and names a
#: person: five dash-separated runs of lower-case letters and digits (uuids, and the ids older
#: posthog-js made).
_ANONYMOUS_ID = re.compile(r"([a-z0-9]+-){4}[a-z0-9]+")


def project_route(path: str) -> tuple[str, str] | None:
    """``(project, what)`` of ``/api/projects/<project>[/persons]`` (or ``environments``), ``what``
    being ``""`` or ``"persons"``; ``None`` for any other path. ``path`` has no trailing slash."""
    parts = path.split("/")
    if len(parts) not in (4, 5) or parts[1] != "api" or parts[2] not in _SCOPES or not parts[3]:
        return None
    what = parts[4] if len(parts) == 5 else ""
    return (parts[3], what) if what in ("", "persons") else None


def authenticate(request: Request, allowed: tuple[str, ...]) -> Response | None:
    """``None`` when the request carries one of the ``allowed`` keys (``Authorization: Bearer``,
    else ``?personal_api_key=``, as PostHog looks for them), else PostHog's 401."""
    key = _bearer(request.header(b"authorization")) or request.query_param("personal_api_key")
    if not key:
        # DRF's NotAuthenticated, as PostHog answers a request that names no key.
        return api_error(
            401, "authentication_error", "Authentication credentials were not provided.", "not_authenticated"
        )
    # Compare against every key so the time taken says nothing about which one was close.
    matched = False
    for candidate in allowed:
        matched |= hmac.compare_digest(key.encode(), candidate.encode())
    if matched:
        return None
    kind = "project secret API key" if key.startswith("phs_") else "personal API key"
    return api_error(401, "authentication_error", f"Invalid {kind}.", "authentication_failed")


def api_error(status: int, type_: str, detail: str, code: str, attr: str | None = None) -> Response:
    """PostHog's (Django REST framework's) error answer."""
    return Response.json(ApiError(type=type_, code=code, detail=detail, attr=attr), status)


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


class ProjectApi:
    """The project and its persons, for the keys in ``HOGFLARE_PERSON_API_KEYS``."""

    def __init__(self, settings: Settings, store: Store | None) -> None:
        self.settings = settings
        self.store = store
        self.project_id = settings.team_id if settings.team_id is not None else 1
        token = settings.project_tokens[0] if settings.project_tokens else None
        #: PostHog's team object, with the fields integrators read; the settings fix it.
        self.project = {
            "id": self.project_id,
            "uuid": str(uuid.uuid5(_HOGFLARE, f"project:{self.project_id}:{token or 'hogflare'}")),
            "organization": str(uuid.uuid5(_HOGFLARE, "organization")),
            "project_id": self.project_id,
            "name": "hogflare",
            "api_token": token,
            "timezone": "UTC",
        }

    def answer(self, request: Request, project: str, what: str) -> Response:
        # Authentication first, as PostHog's views check it before the method.
        refusal = authenticate(request, self.settings.person_api_keys)
        if refusal is not None:
            return refusal
        if request.method not in {"GET", "HEAD"}:
            refused = api_error(405, "invalid_request", f'Method "{request.method}" not allowed.', "method_not_allowed")
            refused.headers.append((b"allow", b"GET, HEAD, OPTIONS"))
            return refused
        if project != "@current" and not (project.isdigit() and int(project) == self.project_id):
            return api_error(404, "invalid_request", "Not found.", "not_found")
        if what == "persons":
            return self._persons(request)
        return Response.json(self.project)

    def _persons(self, request: Request) -> Response:
        distinct_id = request.query_param("distinct_id")
        if distinct_id is None:
            return api_error(
                400,
                "validation_error",
                "hogflare answers persons/ for ?distinct_id=… only; to list or search persons, "
                "query the persons_latest view (hogflare query)",
                "invalid_input",
                "distinct_id",
            )
        # One person at most, as PostHog answers within a project: the first token's that has one.
        results = []
        for token in self.settings.project_tokens or (None,):
            found = self.store.person(token, distinct_id) if self.store is not None else None
            if found is not None:
                results.append(_person(found))
                break
        return Response.json({"next": None, "previous": None, "results": results})


def _person(found: dict[str, Any]) -> dict[str, Any]:
    """PostHog's person object: one map of properties (a ``$set_once`` value under any ``$set``
    of the same key), the distinct ids that look anonymous last, and PostHog's display name."""
    properties = {
        **msgspec.json.decode(found["properties_set_once"]),
        **msgspec.json.decode(found["properties"]),
    }
    distinct_ids = sorted(found["distinct_ids"], key=_looks_anonymous)
    named = (properties[key] for key in _DISPLAY_NAME_PROPERTIES if properties.get(key))
    return {
        "id": found["id"],
        "uuid": found["uuid"],
        "name": next(named, distinct_ids[0] if distinct_ids else str(found["id"])),
        "distinct_ids": distinct_ids,
        "properties": properties,
        "created_at": found["created_at"],
        "is_identified": found["is_identified"],
        "last_seen_at": None,
    }


def _looks_anonymous(distinct_id: str) -> bool:
    return _ANONYMOUS_ID.fullmatch(distinct_id) is not None
