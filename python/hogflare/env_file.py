"""Settings files: Hogflare's native server read ``.env.local``, else ``.env``, from its working
directory, so a deployment moved over keeps its file. As there (dotenvy), a variable already in
the environment wins, and so does the first of two lines naming one variable: a file is a
default, never an override of what an orchestrator sets."""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from io import StringIO
from pathlib import Path

from dotenv.parser import parse_stream

from hogflare.config import ConfigError

#: Looked for in the working directory (not its parents), the first one found read.
DEFAULT_FILES = (".env.local", ".env")
#: ``$NAME`` and ``${NAME}`` in a value that is not in single quotes, as dotenvy replaces them.
_REFERENCE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def read_env_file(path: Path | None = None, environ: MutableMapping[str, str] | None = None) -> Path | None:
    """Add the variables of ``path`` (or of the first default file that exists) that are not set
    already to ``environ`` (the process's environment); returns the file read, if any.

    ``$NAME`` and ``${NAME}`` are replaced by the variable's value, from the environment or an
    earlier line (empty when neither has it). A line that is not ``NAME=value`` (or a comment)
    stops the command: a value silently skipped would leave a setting at its default, with no sign
    of why."""
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
        line = binding.original.string.strip()
        if binding.key is None and not binding.error:
            continue  # a blank line or a comment
        if binding.error or binding.key is None or binding.value is None:
            raise ConfigError(f"{path}, line {binding.original.line}: {line[:80]!r} is not NAME=value")
        if binding.key in env:
            continue
        value = binding.value
        if not line.partition("=")[2].lstrip().startswith("'"):
            value = _REFERENCE.sub(lambda match: env.get(match[1] or match[2], ""), value)
        env[binding.key] = value
    return path
