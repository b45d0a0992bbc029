"""The ``hogflare`` command: serve, query, compact, flags, doctor."""

from __future__ import annotations

import math
import os
import shutil
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import typer

from hogflare.config import ConfigError, Settings

if TYPE_CHECKING:
    from hogflare.flags import FlagsService

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


def _existing(settings: Settings) -> Settings:
    """Settings whose data directory exists: commands that read the lake must not make one up
    (a mistyped path would answer with no rows, as if the lake were empty)."""
    if not settings.data_dir.is_dir():
        typer.echo(f"error: no data directory at {settings.data_dir}", err=True)
        raise typer.Exit(2)
    if not (settings.lake_dir.is_dir() or settings.store_dir.is_dir()):
        typer.echo(f"error: {settings.data_dir} holds no hogflare data (no lake, no store)", err=True)
        raise typer.Exit(2)
    return settings


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


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

    settings = _settings(data_dir)
    _check_geoip(settings)
    bind_host, bind_port = _address(host, port)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        metrics_dir = _fresh_metrics_dir(settings.data_dir)
    except OSError as exc:
        typer.echo(f"error: the data directory {settings.data_dir} cannot be written: {exc.strerror}", err=True)
        raise typer.Exit(2) from exc
    bind_host = _bindable(bind_host, bind_port)
    # Workers and the shipper read their settings from the environment.
    os.environ.update(settings.to_env())
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    configure(settings.log_format, settings.log_level)
    _level_store_with_lake(settings)
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


def _level_store_with_lake(settings: Settings) -> None:
    """A store restored from a backup older than the lake must not number new rows at positions
    the lake holds (see ``hogflare.store``); done here, before any worker can commit."""
    import structlog

    from hogflare.store import level_with_lake

    log = structlog.get_logger("hogflare.cli")
    try:
        reached = level_with_lake(settings)
    except Exception:
        # The shipper reports a lake it cannot read; ingestion need not wait for it.
        log.exception("cannot compare the store's outbox with the lake")
        return
    if reached is not None:
        log.warning(
            "the store's outbox is behind the lake (was the store restored from an older backup?): "
            f"new rows are numbered after position {reached}, the last one the lake holds",
            position=reached,
        )


def _check_geoip(settings: Settings) -> None:
    """Open ``HOGFLARE_GEOIP_DB`` once here: a file that is no database would stop each worker as
    it starts, and Granian would start them again and again."""
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


def _fresh_metrics_dir(data_dir: Path) -> Path:
    """An empty ``<data_dir>/metrics/<pid>`` for the counters this server's workers and shipper
    share (see ``hogflare.metrics``, not imported here: prometheus-client picks its storage on
    import, and the workers inherit this process's modules). Counts of a previous run are not
    carried over (Prometheus reads a counter that starts again from zero as a restart), and those
    of another server running on the same data directory are left alone."""
    root = data_dir / "metrics"
    root.mkdir(parents=True, exist_ok=True)
    for entry in root.iterdir():
        if entry.is_dir() and entry.name.isdigit() and _running(int(entry.name)):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)  # the counters of a version that kept them in the root
    path = root / str(os.getpid())
    path.mkdir()
    return path


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a pid left from before a restart, now this process's own
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
) -> None:
    """Run SQL (DuckDB) over the lake. `--format json` prints one JSON array of row objects.

    JSON and CSV are written as DuckDB produces the rows, so a result larger than memory can be
    exported (`--format csv "select * from events" > events.csv`)."""
    from hogflare import query as q
    from hogflare.lake import Lake

    settings = _existing(_settings(data_dir))
    if not sql.strip():
        typer.echo("error: no SQL given", err=True)
        raise typer.Exit(2)

    def missing(table: str, paths: list[str]) -> None:
        # A damaged lake is still worth reading; the answer says what it lacks.
        typer.echo(
            f"warning: {len(paths)} data file(s) of {table} are missing ({paths[0]}{', …' if len(paths) > 1 else ''});"
            " the query reads the rest",
            err=True,
        )

    try:
        with q.results(Lake(settings.lake_dir), sql, on_missing=missing) as result:
            if output is OutputFormat.json:
                q.write_json(result.batches, sys.stdout.buffer)
                sys.stdout.buffer.write(b"\n")
            elif output is OutputFormat.csv:
                q.write_csv(result.schema.names, result.batches, sys.stdout)
            else:
                sys.stdout.write(q.to_text(q.collect(result)))
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
        typer.echo(f"error: cannot read the lake in {settings.lake_dir}: {_first_line(exc)}", err=True)
        raise typer.Exit(1) from exc


@cli.command()
def compact(
    data_dir: DataDir = None,
    min_files: Annotated[int, typer.Option(help="Rewrite a day once it has this many small files.")] = 4,
    small_mb: Annotated[int, typer.Option(help="Files under this size (MB) count as small.")] = 64,
) -> None:
    """Rewrite each day's small Parquet files into one larger file."""
    from hogflare.lake import TABLES, CompactionConflictError, Lake

    settings = _existing(_settings(data_dir))
    lake = Lake(settings.lake_dir)
    conflicts = rewritten = 0
    for table in TABLES:
        # A day needs two files at least to become one.
        for day in list(lake.days_with_small_files(table, max(min_files, 2), small_mb << 20)):
            try:
                replaced = lake.compact_day(table, day)
            except CompactionConflictError as exc:
                typer.echo(f"error: {exc}", err=True)
                conflicts += 1
                continue
            if replaced:
                rewritten += 1
                typer.echo(f"{table} {day}: {replaced} files rewritten as one")
    if conflicts:
        raise typer.Exit(1)
    if not rewritten:
        typer.echo(f"nothing to compact: no day has {max(min_files, 2)} files under {small_mb} MB")


class FailStatus(StrEnum):
    too_many_requests = "429"
    internal_error = "500"
    unavailable = "503"


@cli.command("fake-pipeline")
def fake_pipeline(  # noqa: PLR0917 - typer options
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8088,
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

    findings = examine(_settings(data_dir))
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
    settings = _settings(data_dir)
    configure(settings.log_format, settings.log_level)
    # Every worker of a starting server launches a shipper, and all but one should exit before
    # the shipper's imports, which take seconds of CPU the workers need. The shipper's own lock,
    # which tells the workers it is running, is only taken once those imports are done.
    starting = acquire_lock(starting_lock_path(settings), patience=3.0)
    if starting is None:
        import structlog

        structlog.get_logger("hogflare.shipper").info("another shipper is running or starting; exiting")
        raise typer.Exit(0)
    from hogflare import shipper

    with starting:
        raise typer.Exit(shipper.serve(settings, parent))


flags_cli = typer.Typer(help="Inspect the feature flags the server would serve.", no_args_is_help=True)
cli.add_typer(flags_cli, name="flags")


def _load_flags(data_dir: Path | None, *, token: str | None = None) -> FlagsService:
    """The flags as the server would load them, each problem printed to stderr; exits 1 when flags
    were configured and none could be loaded."""
    from hogflare.flags import FlagsService

    def report(source: str, message: str) -> None:
        typer.echo(f"{source}: {message}", err=True)

    settings = _settings(data_dir)
    store = None
    if token and settings.store_dir.is_dir():
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


def main() -> None:
    cli()
