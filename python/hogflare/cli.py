"""The ``hogflare`` command: serve, query, compact."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from hogflare.config import ConfigError, Settings

cli = typer.Typer(
    help="A PostHog-compatible analytics backend that lands every event in a lake you own.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (store and lake). Default: $HOGFLARE_DATA_DIR or ./data."),
]


def _settings(data_dir: Path | None) -> Settings:
    try:
        return Settings.from_env(data_dir=data_dir)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _address(host: str | None, port: int | None) -> tuple[str, int]:
    default_host, default_port = "127.0.0.1", 8080
    app_addr = os.environ.get("APP_ADDR", "").strip()
    if app_addr:
        addr_host, _, addr_port = app_addr.rpartition(":")
        default_host = addr_host.strip("[]") or default_host
        default_port = int(addr_port) if addr_port.isdigit() else default_port
    return host or default_host, port or default_port


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind. Default: from $APP_ADDR, else 127.0.0.1.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind. Default: from $APP_ADDR, else 8080.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    data_dir: DataDir = None,
) -> None:
    """Serve the PostHog capture, flags and config endpoints; ship rows to the lake in the background."""
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.server import Server

    settings = _settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Workers and the shipper read their settings from the environment.
    os.environ.update(settings.to_env())
    bind_host, bind_port = _address(host, port)
    typer.echo(f"hogflare serving on http://{bind_host}:{bind_port} with data in {settings.data_dir}", err=True)
    Server(
        "hogflare.app:app",
        address=bind_host,
        port=bind_port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.auto,
        http1_settings=HTTP1Settings(header_read_timeout=10_000),
        respawn_failed_workers=True,
        log_access=False,
    ).serve()


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


@cli.command()
def query(
    sql: Annotated[str, typer.Argument(help="SQL over the views `events`.")],
    data_dir: DataDir = None,
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = OutputFormat.table,
) -> None:
    """Run SQL (DuckDB) over the lake. `--format json` prints one JSON array of row objects."""
    import duckdb

    from hogflare import query as q
    from hogflare.lake import Lake

    settings = _settings(data_dir)
    try:
        table = q.run(Lake(settings.lake_dir), sql)
    except duckdb.Error as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if output is OutputFormat.json:
        sys.stdout.buffer.write(q.to_json(table) + b"\n")
    elif output is OutputFormat.csv:
        sys.stdout.write(q.to_csv(table))
    else:
        sys.stdout.write(q.to_text(table))


@cli.command()
def compact(
    data_dir: DataDir = None,
    min_files: Annotated[int, typer.Option(help="Rewrite a day once it has this many small files.")] = 4,
    small_mb: Annotated[int, typer.Option(help="Files under this size (MB) count as small.")] = 64,
) -> None:
    """Rewrite each day's small Parquet files into one larger file."""
    from hogflare.lake import TABLES, Lake

    settings = _settings(data_dir)
    lake = Lake(settings.lake_dir)
    for table in TABLES:
        for day in list(lake.days_with_small_files(table, min_files, small_mb << 20)):
            replaced = lake.compact_day(table, day)
            typer.echo(f"{table} {day}: {replaced} files rewritten as one")


@cli.command(hidden=True)
def ship(data_dir: DataDir = None) -> None:
    """Run the shipper of a data directory in the foreground (the server starts one itself)."""
    from hogflare import shipper
    from hogflare.logs import configure

    settings = _settings(data_dir)
    configure(settings.log_format, settings.log_level)
    raise typer.Exit(shipper.serve(settings))


def main() -> None:
    cli()
