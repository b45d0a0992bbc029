"""``hogflare flags``: the feature flags as the server would load them, listed or evaluated for one
user."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import typer

from hogflare.cli_options import DataDir, settings_or_exit

if TYPE_CHECKING:
    from hogflare.flags import FlagsService

flags_cli = typer.Typer(help="Inspect the feature flags the server would serve.", no_args_is_help=True)


def _load_flags(data_dir: Path | None, *, token: str | None = None) -> FlagsService:
    """The flags as the server would load them, each problem printed to stderr; exits 1 when flags
    were configured and none could be loaded."""
    from hogflare.flags import FlagsService

    def report(source: str, message: str) -> None:
        typer.echo(f"{source}: {message}", err=True)

    settings = settings_or_exit(data_dir)
    store = None
    if token:
        # The stored persons are what the token is for: a mistyped path must not answer as if
        # the person had no properties.
        if not settings.store_dir.is_dir():
            typer.echo(f"error: no store in {settings.data_dir} to read the person from (--token)", err=True)
            raise typer.Exit(2)
        from hogflare.store import open_store

        store = open_store(settings)
    service = FlagsService(settings, store, report=report)
    if service.configured and service.problems and not len(service.current()):
        typer.echo("error: no flag could be loaded", err=True)
        raise typer.Exit(1)
    return service


def _json_object(option: str, text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        typer.echo(f"error: {option} is not JSON: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not isinstance(value, dict):
        typer.echo(f"error: {option} must be a JSON object", err=True)
        raise typer.Exit(2)
    return value


@flags_cli.command("list")
def flags_list(
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array of flag objects.")] = False,
) -> None:
    """List every flag: key, whether it is active, its type, and where it comes from."""
    rows = _load_flags(data_dir).summaries()
    if as_json:
        sys.stdout.buffer.write(msgspec.json.encode(rows) + b"\n")
        return
    table = [("KEY", "ACTIVE", "TYPE", "LOCAL", "SOURCE")]
    table += [(r.key, "yes" if r.active else "no", r.type, "yes" if r.local else "no", r.source) for r in rows]
    widths = [max(len(row[column]) for row in table) for column in range(len(table[0]) - 1)]
    for row in table:
        typer.echo("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]))


@flags_cli.command("eval")
def flags_eval(
    *,
    distinct_id: Annotated[str, typer.Option("--distinct-id", help="The user to evaluate the flags for.")],
    person_properties: Annotated[
        str | None, typer.Option("--person-properties", help='JSON object, e.g. \'{"plan": "pro"}\'.')
    ] = None,
    groups: Annotated[
        str | None, typer.Option("--groups", help='JSON {type: key}, e.g. \'{"company": "acme"}\'.')
    ] = None,
    group_properties: Annotated[
        str | None, typer.Option("--group-properties", help="JSON {type: {property: value}}.")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="Project token: use the stored person's and groups' properties and experience continuity's "
            "hash keys too.",
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Evaluate every flag for one user and print the v2 `flags` answer an SDK would get."""
    person = _json_object("--person-properties", person_properties)
    group_keys = _json_object("--groups", groups) or {}
    if any(isinstance(key, dict | list | bool) for key in group_keys.values()):
        typer.echo("error: --groups maps each group type to its key, a string or a number", err=True)
        raise typer.Exit(2)
    group_props = _json_object("--group-properties", group_properties)
    if group_props is not None and not all(isinstance(props, dict) for props in group_props.values()):
        typer.echo("error: --group-properties maps each group type to an object of properties", err=True)
        raise typer.Exit(2)
    service = _load_flags(data_dir, token=token)
    evaluation = service.evaluate(
        token,
        distinct_id,
        person_properties=person,
        groups={kind: str(key) for kind, key in group_keys.items() if key is not None},
        group_properties=group_props,
    )
    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(evaluation)) + b"\n")
