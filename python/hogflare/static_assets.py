"""``/static/``: posthog-js's own browser scripts, for pages that load the SDK from their
``api_host`` (PostHog's HTML snippet fetches ``<api_host>/static/array.js``) and for the
extensions posthog-js loads from its asset host when a feature asks for one (exception
autocapture, dead clicks, surveys, the session recorder).

The scripts are those of the posthog-js release pinned in ``assets/package.json``, which
``make build`` installs. ``/static/<name>.js?v=<version>`` is answered with that release's file
whatever the version, as PostHog's CDN answers it with its newest; ``/static/<version>/<name>.js``
(posthog-js's ``strict_script_versioning``) only for the pinned version.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import structlog

from hogflare.http import Response, error

log = structlog.get_logger("hogflare.static")

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "assets/node_modules/posthog-js"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.js")
_HEADERS = [(b"content-type", b"application/javascript; charset=utf-8"), (b"cache-control", b"public, max-age=3600")]


@functools.cache
def installed_version() -> str | None:
    """The posthog-js release installed beside hogflare; ``None`` (and one warning) without one."""
    try:
        version: str = json.loads((PACKAGE_DIR / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        log.warning(
            "posthog-js's scripts are not installed: /static/ answers 404",
            expected=str(PACKAGE_DIR),
            fix="`make build` installs them",
        )
        return None
    return version


@functools.lru_cache(maxsize=64)
def _script(name: str) -> bytes | None:
    path = PACKAGE_DIR / "dist" / name
    try:
        return path.read_bytes()
    except OSError:
        return None


def static_asset(path: str) -> Response:
    """The answer to ``GET /static/<name>.js`` or ``/static/<version>/<name>.js``."""
    parts = path.removeprefix("/static/").split("/")
    version = installed_version()
    if len(parts) == 2:
        asked, name = parts
        if version is not None and asked != version:
            return error(404, f"hogflare serves posthog-js {version}'s scripts, not {asked}'s")
    elif len(parts) == 1:
        [name] = parts
    else:
        return error(404, f"no script at {path}")
    # Source maps and type files are not served: the bundles are all a browser needs.
    script = _script(name) if version is not None and _NAME.fullmatch(name) else None
    if script is None:
        return error(404, f"no script at {path}")
    return Response(200, script, list(_HEADERS))
