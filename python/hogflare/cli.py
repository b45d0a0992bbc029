"""The ``hogflare`` command: serve, query, compact, flags, doctor."""

from __future__ import annotations

import math
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hogflare.cli_flags import flags_cli
from hogflare.cli_options import (
    DataDir,
    SettingsFile,
    existing_or_exit,
    first_line,
    in_place_or_exit,
    lake_or_exit,
    settings_file,
    settings_or_exit,
)
from hogflare.config import Settings
from hogflare.metrics_dir import fresh_metrics_dir, remove_metrics_dir
from hogflare.supervisor import SERVER_ENV

if TYPE_CHECKING:
    from hogflare._hogflare import Store

cli = typer.Typer(
    help="A PostHog-compatible analytics backend that lands every event in a lake you own.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cli.add_typer(flags_cli, name="flags")

cli.callback()(settings_file)


def _address(host: str | None, port: int | None) -> tuple[str, int]:
    default_host, default_port = "127.0.0.1", 8080
    app_addr = os.environ.get("APP_ADDR", "").strip()
    if app_addr:
        addr_host, _, addr_port = app_addr.rpartition(":")
        if not addr_port.isdigit() or not 0 < int(addr_port) < 65536:
            typer.echo(f"error: invalid setting: APP_ADDR: {app_addr!r} is not host:port (a port of 1-65535)", err=True)
            raise typer.Exit(2)
        default_host = addr_host.strip("[]") or default_host
        default_port = int(addr_port)
    return host or default_host, port or default_port


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind. Default: from $APP_ADDR, else 127.0.0.1.")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port to bind. Default: from $APP_ADDR, else 8080.")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    data_dir: DataDir = None,
) -> None:
    """Serve the PostHog capture, flags and config endpoints; ship rows to the lake in the background."""
    import structlog
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    from hogflare.logs import configure, granian_log_config

    settings = in_place_or_exit(settings_or_exit(data_dir))
    _check_settings(settings)
    bind_host, bind_port = _address(host, port)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        typer.echo(f"error: the data directory {settings.data_dir} cannot be written: {exc.strerror}", err=True)
        raise typer.Exit(2) from exc
    bind_host = _bindable(bind_host, bind_port)
    configure(settings.log_format, settings.log_level)
    if settings.store == "on":
        _prepare_store(settings)
    try:
        metrics_dir = fresh_metrics_dir(settings.data_dir)
    except OSError as exc:
        typer.echo(f"error: the metrics files cannot be written: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        # Workers and the shipper read their settings from the environment.
        os.environ.update(settings.to_env())
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        os.environ[SERVER_ENV] = str(os.getpid())
        if SettingsFile.read is not None:
            structlog.get_logger("hogflare.cli").info(f"settings read from {SettingsFile.read} beneath the environment")
        structlog.get_logger("hogflare.cli").info(
            f"hogflare serving on http://{f'[{bind_host}]' if ':' in bind_host else bind_host}:{bind_port}"
            f" with data in {settings.data_dir}"
        )
        Server(
            "hogflare.app:app",
            address=bind_host,
            port=bind_port,
            interface=Interfaces.ASGI,
            workers=workers,
            loop=Loops.auto,
            http1_settings=HTTP1Settings(header_read_timeout=10_000),
            respawn_failed_workers=True,
            # Every step of a worker's shutdown is bounded; past them all (with a margin, in which
            # a stuck worker dumps its stacks) Granian kills it.
            workers_kill_timeout=math.ceil(settings.worker_stop_secs) + 10,
            log_access=False,
            log_level=LogLevels(settings.log_level.lower()),
            log_dictconfig=granian_log_config(settings.log_format),
        ).serve()
    finally:
        remove_metrics_dir(metrics_dir)


def _prepare_store(settings: Settings) -> None:
    """Open the store once here, before any worker: one that cannot be opened (damaged, or of a
    newer hogflare) would stop each worker as it starts, and Granian would start them again and
    again. Refuse ``POSTHOG_GROUP_TYPE_<n>`` that contradict the slots the store gave: events of
    two types would share one, and their groups merge, with no error anywhere. Then level the
    store with the lake. The store is closed again before the workers are forked."""
    from hogflare.errors import HogflareError
    from hogflare.store import group_type_conflicts, open_store

    try:
        store = open_store(settings)
        conflicts = group_type_conflicts(settings, store)
    except HogflareError as exc:
        typer.echo(f"error: the store in {settings.store_dir} cannot be opened: {first_line(exc)}", err=True)
        raise typer.Exit(2) from exc
    if conflicts:
        typer.echo(
            f"error: {'; '.join(conflicts)}. Events of both types would share one slot and their groups merge: "
            "set each POSTHOG_GROUP_TYPE_<n> to the type the store holds there, or leave it unset",
            err=True,
        )
        raise typer.Exit(2)
    _level_store_with_lake(settings, store)


def _level_store_with_lake(settings: Settings, store: Store) -> None:
    """A store restored from a backup older than the lake must not number new rows at positions
    the lake holds (see ``hogflare.store``); done here, before any worker can commit."""
    import structlog

    from hogflare.store import level_with_lake

    log = structlog.get_logger("hogflare.cli")
    try:
        reached = level_with_lake(settings, store)
    except Exception:
        # The shipper reports a lake it cannot read, and compares once it can; ingestion need
        # not wait for it.
        log.exception("cannot compare the store's outbox with the lake")
        return
    if reached is not None:
        log.warning(
            "the store's outbox is behind the lake (was the store restored from an older backup?): "
            f"new rows are numbered after position {reached}, the last one the lake holds",
            position=reached,
        )


def _check_settings(settings: Settings) -> None:
    """Refuse settings that would only fail in the workers: ``HOGFLARE_FEATURE_FLAGS`` that give no
    flag at all (every flag would answer off), and a ``HOGFLARE_GEOIP_DB`` file that is no database
    (each worker would stop as it starts, and Granian start them again and again)."""
    from hogflare.flags import ENV_SOURCE, env_flags_unusable

    flags_problem = env_flags_unusable(settings)
    if flags_problem is not None:
        typer.echo(f"error: invalid setting: {ENV_SOURCE}: {flags_problem}", err=True)
        raise typer.Exit(2)
    if not settings.geoip_paths:
        return
    from hogflare._hogflare import Decoder

    try:
        Decoder(max_inflated_bytes=1, max_event_bytes=1, geoip_db=list(settings.geoip_paths))
    except ValueError as exc:
        typer.echo(f"error: invalid setting: HOGFLARE_GEOIP_DB: {exc}", err=True)
        raise typer.Exit(2) from exc


def _bindable(host: str, port: int) -> str:
    """The address to listen on, as the IP Granian wants, once it is known to be free: Granian
    binds with ``SO_REUSEPORT``, so a second server on a taken port would silently share it."""
    import socket

    try:
        family, _, _, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        typer.echo(f"error: cannot listen on {host}:{port}: {host!r} is not an address of this machine", err=True)
        raise typer.Exit(2) from exc
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # A previous run's connections in TIME_WAIT do not hold the port; a listener does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            typer.echo(f"error: cannot listen on {host}:{port}: {exc.strerror}", err=True)
            raise typer.Exit(2) from exc
    return str(address[0])


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


@cli.command()
def query(
    sql: Annotated[
        str,
        typer.Argument(
            help="SQL over the views `events`, `persons`, `persons_latest`, `person_distinct_ids` and `groups`."
        ),
    ],
    data_dir: DataDir = None,
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = OutputFormat.table,
    max_width: Annotated[int, typer.Option(min=0, help="Table cells cut to this many characters (0: never).")] = 60,
) -> None:
    """Run SQL (DuckDB) over the lake. `--format json` prints one JSON array of row objects.

    JSON and CSV are written as DuckDB produces the rows, so a result larger than memory can be
    exported (`--format csv "select * from events" > events.csv`)."""
    from hogflare import query as q

    settings = existing_or_exit(settings_or_exit(data_dir))
    if not sql.strip():
        typer.echo("error: no SQL given", err=True)
        raise typer.Exit(2)
    lake = lake_or_exit(settings)

    def missing(table: str, paths: list[str]) -> None:
        # A damaged lake is still worth reading; the answer says what it lacks.
        typer.echo(
            f"warning: {len(paths)} data file(s) of {table} are missing ({paths[0]}{', …' if len(paths) > 1 else ''});"
            " the query reads the rest",
            err=True,
        )

    try:
        with q.results(lake, sql, on_missing=missing) as result:
            if output is OutputFormat.json:
                q.write_json(result.batches, sys.stdout.buffer)
                sys.stdout.buffer.write(b"\n")
            elif output is OutputFormat.csv:
                q.write_csv(result.schema.names, result.batches, sys.stdout)
            else:
                sys.stdout.write(q.to_text(q.collect(result), max_width))
            sys.stdout.flush()
    except q.QueryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except BrokenPipeError:
        # The reader stopped early (`| head`): nothing more to say, and nowhere to say it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(1) from None
    except Exception as exc:
        # The catalog or a file the lake names cannot be read (a broken disk, a damaged copy):
        # an operator's answer, not a traceback.
        typer.echo(f"error: cannot read the lake in {settings.lake_dir}: {first_line(exc)}", err=True)
        raise typer.Exit(1) from exc


@cli.command()
def compact(
    data_dir: DataDir = None,
    min_files: Annotated[int, typer.Option(min=2, help="Rewrite a day once it has this many small files.")] = 4,
    small_mb: Annotated[int, typer.Option(min=1, help="Files under this size (MB) count as small.")] = 64,
) -> None:
    """Rewrite each day's small Parquet files into larger ones."""
    from hogflare._hogflare import StorageError
    from hogflare.compaction import CompactionConflictError, Compactor, small_files_by_day
    from hogflare.lake_tables import TABLES

    lake = lake_or_exit(existing_or_exit(settings_or_exit(data_dir)))
    failures = rewritten = 0
    for table in TABLES:
        # One plan of the table serves every day: the compactor follows its own commits.
        compactor = Compactor(lake, table)
        days = small_files_by_day(compactor.live().values(), small_mb << 20)
        for day in sorted(day for day, small in days.items() if len(small) >= min_files):
            try:
                replaced, written = compactor.compact_day(day, small_mb << 20)
            except CompactionConflictError as exc:
                typer.echo(f"error: {exc}", err=True)
                failures += 1
                continue
            except StorageError as exc:
                # A file that cannot be read leaves its day as it was, and the other days to be done.
                typer.echo(f"error: {table} {day}: {exc}", err=True)
                failures += 1
                continue
            if replaced:
                rewritten += 1
                typer.echo(f"{table} {day}: {replaced} files rewritten as {'one' if written == 1 else written}")
    if failures:
        raise typer.Exit(1)
    if not rewritten:
        typer.echo(f"nothing to compact: no day has {min_files} files under {small_mb} MB")


class FailStatus(StrEnum):
    too_many_requests = "429"
    internal_error = "500"
    unavailable = "503"


@cli.command("fake-pipeline")
def fake_pipeline(  # noqa: PLR0917 - typer options
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to bind.")] = 8088,
    db: Annotated[Path | None, typer.Option(help="DuckDB file for the rows. Default: in memory.")] = None,
    token: Annotated[str | None, typer.Option(help="Require `Authorization: Bearer TOKEN` (else 401).")] = None,
    fail_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="Fraction of POSTs to fail.")] = 0.0,
    status: Annotated[FailStatus, typer.Option(help="Status of a failed POST.")] = FailStatus.unavailable,
    delay: Annotated[float, typer.Option(min=0.0, help="Seconds to wait before answering a POST.")] = 0.0,
    discard: Annotated[
        bool, typer.Option(help="Check and count the rows but keep none (for load tests; GET /events is empty).")
    ] = False,
) -> None:
    """A local stand-in for a Cloudflare Pipelines stream: POST a JSON array, read it back at GET /events.

    GET /stats counts the rows, POSTs, failures and POSTs in flight (now and at most); POST /reset
    forgets the rows.

    POST /config changes how it misbehaves while it runs, e.g. to take the stream down and bring it back.

    Its JSON body holds any of: {"fail_rate": 1, "status": 429, "retry_after": 2, "delay": 0, "token": null}
    """
    from hogflare import fake_pipeline as fake

    host = _bindable(host, port)
    typer.echo(f"fake pipeline on http://{host}:{port}/ (rows at /events)", err=True)
    fake.serve(
        host=host,
        port=port,
        db=db,
        token=token,
        fail_rate=fail_rate,
        status=int(status.value),
        delay=delay,
        discard=discard,
    )


@cli.command()
def doctor(data_dir: DataDir = None) -> None:
    """Check the data directory, the store, the lake, each configured sink and the flags; say what is wrong.

    Exits 1 when something needs fixing, 0 otherwise. Safe to run beside a running server."""
    from hogflare.doctor import Level, examine

    findings = examine(settings_or_exit(data_dir), SettingsFile.read)
    width = max(len(finding.subject) for finding in findings)
    for finding in findings:
        typer.echo(f"{finding.level.value:<8} {finding.subject:<{width}}  {finding.message}")
    problems = sum(finding.level is Level.problem for finding in findings)
    warnings = sum(finding.level is Level.warning for finding in findings)
    typer.echo(f"{problems} problems, {warnings} warnings", err=True)
    if problems:
        raise typer.Exit(1)


@cli.command()
def ship(data_dir: DataDir = None) -> None:
    """Run the shipper of a data directory in the foreground (the server starts one itself)."""
    from hogflare.logs import configure
    from hogflare.supervisor import acquire_lock, parent_of_shipper, starting_lock_path

    parent = parent_of_shipper()
    settings = in_place_or_exit(settings_or_exit(data_dir))
    configure(settings.log_format, settings.log_level)
    # Every worker of a starting server launches a shipper, and all but one should exit before
    # the shipper's imports, which take seconds of CPU the workers need. The shipper's own lock,
    # which tells the workers it is running, is only taken once those imports are done.
    starting = acquire_lock(starting_lock_path(settings), patience=3.0)
    if starting is None:
        import structlog

        structlog.get_logger("hogflare.shipper").info("another shipper is running or starting; exiting")
        raise typer.Exit(0)
    from hogflare import shipper_process

    with starting:
        raise typer.Exit(shipper_process.serve(settings, parent))


def main() -> None:
    cli()
