"""``hogflare doctor``: look at a data directory and the configured sinks, and say what is wrong.

Every check reads; none changes anything. A check that cannot even look (the lake's catalog does
not open, a stream does not answer) is itself the finding. The server may be running meanwhile:
LMDB and the catalog are made for several readers.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import httpx

from hogflare.config import GiB, Settings

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile

#: Below this much free disk, the outbox and the lake soon stop growing.
_LOW_DISK_BYTES = 1 * GiB
#: Below this, a commit of a few batches no longer fits: ingestion answers 503.
_FULL_DISK_BYTES = 64 << 20
#: Fraction of a limit at which a warning becomes due.
_NEARLY = 0.8
_STREAM_CHECK_TIMEOUT_SECS = 10.0
#: A server that has run this long without a shipper has none coming.
_SHIPPER_START_SECS = 30.0
#: More small files than this in a day of a table: the shipper's upkeep keeps days well below it.
MANY_SMALL_FILES = 256


class Level(StrEnum):
    ok = "ok"
    warning = "warning"
    problem = "problem"


class Finding(NamedTuple):
    level: Level
    subject: str
    message: str


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def check_data_dir(settings: Settings) -> Iterator[Finding]:
    path = settings.data_dir
    if not path.exists():
        parent = next((p for p in path.absolute().parents if p.exists()), Path("/"))
        if os.access(parent, os.W_OK):
            yield Finding(Level.ok, "data directory", f"{path} does not exist yet; the server creates it")
        else:
            yield Finding(Level.problem, "data directory", f"{path} does not exist and {parent} is not writable")
        return
    if not path.is_dir():
        yield Finding(Level.problem, "data directory", f"{path} is not a directory")
        return
    if not os.access(path, os.W_OK | os.X_OK):
        yield Finding(Level.problem, "data directory", f"{path} is not writable by this user")
        return
    free = shutil.disk_usage(path).free
    if free < _FULL_DISK_BYTES:
        note = "; ingestion answers 503 once a commit no longer fits"
        yield Finding(Level.problem, "data directory", f"{path}: only {_size(free)} free on its disk{note}")
        return
    level = Level.warning if free < _LOW_DISK_BYTES else Level.ok
    yield Finding(level, "data directory", f"{path}: writable, {_size(free)} free on its disk")


def _outbox_finding(settings: Settings, rows: int, waiting: int) -> Finding:
    limit = settings.outbox_limit
    if waiting >= limit:
        level, note = Level.problem, "at the high-water mark: ingestion answers 503"
    elif waiting >= _NEARLY * limit:
        level, note = Level.warning, "near the high-water mark"
    else:
        level, note = Level.ok, "below the high-water mark"
    mark = "HOGFLARE_OUTBOX_MAX_BYTES"
    if limit < settings.outbox_max_bytes:
        mark += f", held to a quarter of the map: {_size(limit)}"
    return Finding(level, "outbox", f"{rows} rows, {_size(waiting)} waiting; {note} ({mark})")


def check_store(settings: Settings) -> Iterator[Finding]:
    from hogflare.errors import HogflareError
    from hogflare.store import LAKE_CURSOR, group_type_conflicts, lake_position, open_store

    if not (settings.store_dir / "data.mdb").exists():
        yield Finding(Level.ok, "store", "no store yet (nothing has been ingested)")
        return
    try:
        store = open_store(settings)
        store.check()
        next_seq, rows, waiting = store.outbox_state()
        dictionary = store.outbox_dictionary()
        cursors = {sink: store.cursor(sink) or 0 for sink in settings.enabled_sinks}
        store_id = store.id
        conflicts = group_type_conflicts(settings, store)
    except HogflareError as exc:
        yield Finding(Level.problem, "store", f"{settings.store_dir} cannot be read: {exc}")
        return
    for conflict in conflicts:
        yield Finding(Level.problem, "group types", f"{conflict}: `hogflare serve` refuses to start")
    used = (settings.store_dir / "data.mdb").stat().st_size
    map_level = Level.warning if used >= _NEARLY * settings.lmdb_map_size else Level.ok
    yield Finding(
        map_level,
        "store",
        f"{_size(used)} used of the {_size(settings.lmdb_map_size)} map (HOGFLARE_LMDB_MAP_SIZE)",
    )
    yield _outbox_finding(settings, rows, waiting)
    if settings.outbox_compression == "off":
        compression = "entries stored as they are (HOGFLARE_OUTBOX_COMPRESSION=off)"
    elif dictionary:
        compression = f"new entries compressed with dictionary {dictionary}"
    else:
        compression = "entries not compressed yet: a dictionary is made from the first ~1,500 the sinks read"
    yield Finding(Level.ok, "outbox", compression)
    for sink, cursor in cursors.items():
        behind = max(0, next_seq - 1 - cursor)
        yield Finding(Level.ok, f"sink {sink}", f"{behind} outbox entries not yet delivered")
    try:
        reached = lake_position(settings.lake_dir, store_id) if LAKE_CURSOR in cursors else 0
    except Exception:
        return  # the lake's own check says what is wrong with it
    if reached >= next_seq:
        message = (
            f"the lake holds this store's rows up to position {reached}, past its outbox ({next_seq - 1}): "
            "was the store restored from an older backup? `hogflare serve` numbers new rows after "
            "the lake's position when it starts"
        )
        yield Finding(Level.warning, "outbox", message)


def check_shipper(settings: Settings) -> Iterator[Finding]:
    from hogflare.metrics_dir import servers_running
    from hogflare.supervisor import shipper_alive

    try:
        alive = shipper_alive(settings)
    except OSError as exc:
        yield Finding(Level.problem, "shipper", f"cannot tell whether one runs: {exc}")
        return
    if alive:
        yield Finding(Level.ok, "shipper", "running")
    elif servers := servers_running(settings.data_dir):
        server = servers[0]
        # A server starts its shipper a few seconds after it starts serving.
        level = Level.problem if _running_for(server) > _SHIPPER_START_SECS else Level.warning
        message = (
            f"not running while a server uses this data directory (pid {server}): rows wait in the "
            "outbox until one runs (with HOGFLARE_SHIPPER=off, start `hogflare ship`)"
        )
        yield Finding(level, "shipper", message)
    else:
        yield Finding(Level.ok, "shipper", "not running (no server seems to use this data directory)")


def _running_for(pid: int) -> float:
    """Seconds since process ``pid`` started (Linux's /proc); a long time when it cannot be told."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of the line, the start time after boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return math.inf
    return uptime - started_ticks / os.sysconf("SC_CLK_TCK")


def check_lake(settings: Settings) -> Iterator[Finding]:
    from hogflare.lake import Lake
    from hogflare.lake_tables import TABLES
    from hogflare.store import LakeMovedError, local_path

    if not (settings.lake_dir / "catalog.db").exists():
        yield Finding(Level.ok, "lake", "no lake yet (nothing has been shipped)")
        return
    try:
        lake = Lake(settings.lake_dir)
    except LakeMovedError as exc:
        yield Finding(Level.problem, "lake", str(exc))
        return
    except Exception as exc:  # whatever stops the catalog from opening is the finding
        yield Finding(Level.problem, "lake", f"the catalog {settings.lake_dir / 'catalog.db'} does not open: {exc}")
        return
    for name in TABLES:
        try:
            live = lake.live_files(name)
            seq = lake.outbox_seq(name)
        except Exception as exc:
            yield Finding(Level.problem, f"lake {name}", f"cannot be read: {exc}")
            continue
        files = [local_path(file.file_path) for file in live]
        missing = [path for path in files if not Path(path).exists()]
        if missing:
            shown = ", ".join(missing[:3]) + (" …" if len(missing) > 3 else "")
            message = f"{len(missing)} of {len(files)} data files are missing: {shown}"
            yield Finding(Level.problem, f"lake {name}", message)
        else:
            yield Finding(Level.ok, f"lake {name}", f"{len(files)} data files, up to outbox entry {seq}")
        yield from _small_files(settings, name, live)


def _small_files(settings: Settings, name: str, live: list[DataFile]) -> Iterator[Finding]:
    from hogflare.compaction import SMALL_BYTES, small_files_by_day

    by_day = small_files_by_day(live, SMALL_BYTES)
    if not by_day:
        return
    day, small = max(by_day.items(), key=lambda item: len(item[1]))
    if len(small) > MANY_SMALL_FILES:
        upkeep = "HOGFLARE_COMPACT_FILES is 0, so" if not settings.compact_files else "the shipper has not yet"
        message = (
            f"{len(small)} small data files on {day} (every commit and query reads each one): "
            f"{upkeep} rewritten them; `hogflare compact` does it now"
        )
        yield Finding(Level.warning, f"lake {name}", message)


def check_streams(settings: Settings, client: httpx.Client | None = None) -> Iterator[Finding]:
    """Each configured stream is sent an empty JSON array with its token: no row, but the answer
    tells whether the endpoint exists and takes the token."""
    if "pipelines" not in settings.enabled_sinks:
        return
    streams = [("events", settings.pipeline_endpoint, settings.pipeline_auth_token)]
    if settings.persons_pipeline_endpoint:
        token = settings.persons_pipeline_auth_token or settings.pipeline_auth_token
        streams.append(("persons", settings.persons_pipeline_endpoint, token))
    with client or httpx.Client(timeout=min(settings.pipeline_timeout_secs, _STREAM_CHECK_TIMEOUT_SECS)) as http:
        for name, url, token in streams:
            assert url is not None
            yield _stream_finding(http, f"{name} stream", url, token)


def _stream_finding(http: httpx.Client, subject: str, url: str, token: str | None) -> Finding:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    try:
        response = http.post(url, content=b"[]", headers=headers)
    except httpx.HTTPError as exc:
        return Finding(Level.problem, subject, f"{url} does not answer: {exc!r}")
    status = response.status_code
    if status in {401, 403}:
        return Finding(Level.problem, subject, f"{url} refused the auth token ({status}): check the *_AUTH_TOKEN")
    if status == 404:
        return Finding(Level.problem, subject, f"{url} has no stream (404): check the *_PIPELINE_ENDPOINT")
    if 200 <= status < 300:
        return Finding(Level.ok, subject, f"{url} reachable and accepts the token")
    return Finding(Level.warning, subject, f"{url} reachable; an empty test batch got {status}: {response.text[:200]}")


def check_flags(settings: Settings) -> Iterator[Finding]:
    from hogflare.flags import FlagsService

    problems: list[tuple[str, str]] = []
    service = FlagsService(settings, None, report=lambda source, message: problems.append((source, message)))
    for source, message in problems:
        # The full message points at the spot in the file; `hogflare flags list` prints it.
        yield Finding(Level.problem, "flags", f"{source}: {message.splitlines()[0]}")
    if service.configured:
        yield Finding(Level.ok, "flags", f"{len(service.current())} flags loaded")
    else:
        yield Finding(Level.ok, "flags", "no flags configured")


def check_geoip(settings: Settings) -> Iterator[Finding]:
    from hogflare._hogflare import Decoder
    from hogflare.enrichment import PACKAGED_GEOIP, PACKAGED_GEOIP_DIR

    paths = settings.geoip_paths
    if paths == ():
        yield Finding(Level.ok, "geoip", "off (HOGFLARE_GEOIP_DB)")
        return
    if paths is None:
        paths = tuple(path for path in PACKAGED_GEOIP if path.is_file())
        if not paths:
            message = f"no database installed in {PACKAGED_GEOIP_DIR}: events get no $geoip_* properties"
            yield Finding(Level.warning, "geoip", message)
            return
    try:
        Decoder(max_inflated_bytes=1, max_event_bytes=1, geoip_db=[str(path) for path in paths])
    except ValueError as exc:
        yield Finding(Level.problem, "geoip", f"cannot be read (HOGFLARE_GEOIP_DB): {exc}")
        return
    yield Finding(Level.ok, "geoip", ", ".join(path.name for path in paths))


def check_scripts(settings: Settings) -> Iterator[Finding]:
    from hogflare import static_assets

    version = static_assets.installed_version()
    if version is None:
        message = f"posthog-js's scripts are not installed in {static_assets.PACKAGE_DIR}: /static/ answers 404"
        yield Finding(Level.warning, "scripts", message)
    else:
        yield Finding(Level.ok, "scripts", f"posthog-js {version}'s scripts served under /static/")


CHECKS: tuple[Callable[[Settings], Iterator[Finding]], ...] = (
    check_data_dir,
    check_store,
    check_shipper,
    check_lake,
    check_streams,
    check_flags,
    check_geoip,
    check_scripts,
)


def examine(settings: Settings, settings_file: Path | None = None) -> list[Finding]:
    """Every check's findings, after where the settings came from (``settings_file``, the
    ``.env.local`` or ``.env`` read beneath the environment, if any)."""
    source = f"{settings_file} read, beneath the environment" if settings_file else "the environment only"
    return [Finding(Level.ok, "settings", source), *(finding for check in CHECKS for finding in check(settings))]
