"""Settings files: Hogflare's native server read ``.env.local``, else ``.env``, from its working
directory, so a deployment moved over keeps its file. Variables already in the environment win,
as they did there: a file is a default, never an override of what an orchestrator sets."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from io import StringIO
from pathlib import Path

from dotenv.main import DotEnv
from dotenv.parser import parse_stream

from hogflare.config import ConfigError

#: Looked for in the working directory, the first one found read: Hogflare's order.
DEFAULT_FILES = (".env.local", ".env")


def read_env_file(path: Path | None = None, environ: MutableMapping[str, str] | None = None) -> Path | None:
    """Add the variables of ``path`` (or of the first default file that exists) that are not set
    already to ``environ`` (the process's environment); returns the file read, if any.

    ``${NAME}`` in a value is replaced as a shell would, from the process's environment first, then
    from the file's earlier lines. A line that is not ``NAME=value`` (or a comment) stops the start: a value
    silently skipped would leave a setting at its default, with no sign of why."""
    env = os.environ if environ is None else environ
    if path is None:
        path = next((Path(name) for name in DEFAULT_FILES if Path(name).is_file()), None)
        if path is None:
            return None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"no settings file at {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise ConfigError(f"the settings file {path} cannot be read: {reason}") from exc
    for binding in parse_stream(StringIO(text)):
        if binding.error:
            line = binding.original.string.strip()
            raise ConfigError(
                f"{path}, line {binding.original.line}: {line[:80]!r} is not NAME=value "
                "(a value with spaces or # goes in quotes)"
            )
    values = DotEnv(path, stream=StringIO(text), interpolate=True, override=False).dict()
    for name, value in values.items():
        if value is not None and name not in env:
            env[name] = value
    return path
