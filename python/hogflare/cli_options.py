"""What the ``hogflare`` subcommands share: the settings file, the data directory option and how
a command that cannot go on says so."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hogflare.config import ConfigError, Settings

if TYPE_CHECKING:
    from hogflare.lake import Lake

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (store and lake). Default: $HOGFLARE_DATA_DIR or ./data."),
]


class SettingsFile:
    """The settings file of this run of ``hogflare``: the one given, and the one read."""

    given: Path | None = None
    read: Path | None = None


def settings_file(
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            help="Settings file of NAME=value lines, read by every command that reads settings; variables "
            "already set win. Default: ./.env.local, else ./.env, when there is one.",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """The group's option only: the file is read with the settings, so that ``--help`` and the
    commands that need none never depend on it."""
    SettingsFile.given = env_file


def settings_or_exit(data_dir: Path | None) -> Settings:
    """The settings of the environment, beneath which the settings file is read first."""
    from hogflare.env_file import read_env_file
    from hogflare.supervisor import parent_of_shipper

    try:
        # A shipper started by a worker has the server's settings in its environment already,
        # from whichever file the server was told to read.
        if parent_of_shipper() is None:
            SettingsFile.read = read_env_file(SettingsFile.given)
        return Settings.from_env(data_dir=data_dir)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def existing_or_exit(settings: Settings) -> Settings:
    """Settings whose data directory exists: commands that read the lake must not make one up
    (a mistyped path would answer with no rows, as if the lake were empty)."""
    if not settings.data_dir.is_dir():
        typer.echo(f"error: no data directory at {settings.data_dir}", err=True)
        raise typer.Exit(2)
    if not (settings.lake_dir.is_dir() or settings.store_dir.is_dir()):
        typer.echo(f"error: {settings.data_dir} holds no hogflare data (no lake, no store)", err=True)
        raise typer.Exit(2)
    return settings


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def in_place_or_exit(settings: Settings) -> Settings:
    """Settings whose lake was made where it is (a copied or moved lake's tables still name the
    original's files, which a server here would write to and clean up) and can be written (or
    the shipper would fail on every flush while the outbox filled)."""
    from hogflare.store import LAKE_CURSOR, LakeMovedError, check_lake_place

    try:
        check_lake_place(settings.lake_dir)
    except LakeMovedError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if LAKE_CURSOR in settings.enabled_sinks and not _writable(settings.lake_dir):
        typer.echo(f"error: the lake directory {settings.lake_dir} cannot be written by this user", err=True)
        raise typer.Exit(2)
    return settings


def _writable(directory: Path) -> bool:
    """Whether ``directory`` and the catalog in it can be written; one not made yet is made in
    the data directory, whose own check comes when it is made."""
    if not directory.exists():
        return True
    catalog = directory / "catalog.db"
    return (
        directory.is_dir()
        and os.access(directory, os.W_OK | os.X_OK)
        and (not catalog.exists() or os.access(catalog, os.W_OK))
    )


def lake_or_exit(settings: Settings) -> Lake:
    """The lake of ``settings``, opened for a command that reads it: one copied or moved from
    elsewhere is refused as ``in_place_or_exit`` refuses it, one whose catalog cannot be read
    (a broken disk, a damaged copy) gets an operator's answer rather than a traceback."""
    from hogflare.lake import Lake
    from hogflare.store import LakeMovedError

    try:
        return Lake(settings.lake_dir)
    except LakeMovedError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except Exception as exc:
        typer.echo(f"error: cannot read the lake in {settings.lake_dir}: {first_line(exc)}", err=True)
        raise typer.Exit(1) from exc
