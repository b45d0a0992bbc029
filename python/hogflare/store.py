"""Opening the store, and keeping a store restored from a backup from numbering rows the lake
already counts as delivered.

Each lake commit records the last outbox position it holds and the id of the store that wrote
it. A store put back from a backup taken before some of those commits has the same id and an
outbox that stops short of that position, so the rows it is given next would take positions
the lake records as delivered, and the shipper would pass over them. Before any worker starts,
``level_with_lake`` reads where the lake stands and, if the store is behind, numbers new rows
after it. It reads the catalog directly rather than through pyiceberg, whose import costs the
server's process seconds and memory that the forked workers would inherit.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import unquote, urlparse

from hogflare._hogflare import Store
from hogflare.config import Settings

#: The name of the lake among the sinks, and of its cursor in the store.
LAKE_CURSOR = "lake"
#: Snapshot summary keys of a lake commit: the last outbox position it holds, and whose outbox.
SEQ_PROPERTY = "hogflare.outbox_seq"
STORE_PROPERTY = "hogflare.outbox_store"
CATALOG_NAME = "hogflare"
NAMESPACE = "default"


def open_store(settings: Settings) -> Store:
    return Store(
        str(settings.store_dir),
        map_size=settings.lmdb_map_size,
        group_types=settings.group_types,
        compress_outbox=settings.outbox_compression == "on",
    )


def positions_after(store: Store, position: int) -> int:
    """How many outbox positions a sink whose cursor is ``position`` has yet to ship: those
    after it that the outbox still holds (a sink switched back on may be behind rows already
    freed, which it will never get)."""
    next_seq, _, _ = store.outbox_state()
    return max(0, next_seq - max(position + 1, store.first_position()))


def local_path(location: str) -> str:
    """A file path DuckDB and pyarrow can open, from an Iceberg ``file://`` location."""
    if location.startswith("file:"):
        return unquote(urlparse(location).path)
    return location


def newest_position(snapshots: Iterable[tuple[int, Mapping[str, str] | None]], store_id: str | None) -> int:
    """The outbox position recorded by the newest of a table's snapshots that records one, from
    ``(sequence number, summary)`` pairs; 0 when none does, or when with ``store_id`` the newest
    was recorded by another store (one that this store replaced: none of its rows are in yet)."""
    for _, summary in sorted(snapshots, key=lambda snapshot: snapshot[0], reverse=True):
        value = summary.get(SEQ_PROPERTY) if summary is not None else None
        if value is None:
            continue
        recorded_by = summary.get(STORE_PROPERTY) if summary is not None else None
        if store_id is not None and recorded_by is not None and recorded_by != store_id:
            return 0
        return int(value)
    return 0


class LakeMovedError(Exception):
    """The lake's tables name files under another directory than the lake's own."""


#: How long the checks made at start wait for a catalog another process holds: each can go on
#: without its answer (the shipper compares the store with the lake once it can read it), and a
#: server that waited longer would not be listening meanwhile.
_CATALOG_WAIT_SECS = 5.0


def _table_metadata(lake_dir: Path) -> list[Path]:
    """Where the catalog says each table's current metadata file is."""
    catalog = lake_dir / "catalog.db"
    if not catalog.exists():
        return []
    query = "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = ? AND table_namespace = ?"
    try:
        with sqlite3.connect(
            f"{catalog.resolve().as_uri()}?mode=ro", uri=True, timeout=_CATALOG_WAIT_SECS
        ) as connection:
            locations = connection.execute(query, (CATALOG_NAME, NAMESPACE)).fetchall()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            raise  # held by a writer: waiting again would only delay the caller, who can go on
        # A writer killed mid-commit leaves a journal that only a writable connection rolls back.
        with sqlite3.connect(catalog, timeout=_CATALOG_WAIT_SECS) as connection:
            locations = connection.execute(query, (CATALOG_NAME, NAMESPACE)).fetchall()
    return [Path(local_path(location)) for (location,) in locations if location is not None]


def check_lake_place(lake_dir: Path) -> None:
    """Refuse a lake copied or moved from elsewhere: Iceberg records every file by its full path,
    so a copy's tables are still the original's, and a server on the copy would add to them and
    delete what it took for its own leftovers there. A path reached through a link is the same."""
    home = (lake_dir / "warehouse").resolve()
    try:
        tables = _table_metadata(lake_dir)
    except sqlite3.Error:
        return  # a catalog that cannot be read is the lake's own error to report, where it is opened
    for metadata in tables:
        if not metadata.resolve().is_relative_to(home):
            parts = metadata.parts
            last = len(parts) - 1 - parts[::-1].index("warehouse") if "warehouse" in parts else None
            made_in = Path(*parts[:last]) if last else metadata.parent
            raise LakeMovedError(
                f"the lake in {lake_dir} was made in {made_in} and its tables still name the files there "
                "(Iceberg records full paths): serve the data directory from where it was made (a symbolic "
                "link from there to here will do), or copy it back"
            )


def lake_position(lake_dir: Path, store_id: str) -> int:
    """The furthest outbox position of ``store_id`` that any table of the lake holds (0 if none)."""
    reached = 0
    for location in _table_metadata(lake_dir):
        raw = location.read_bytes()
        metadata = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
        snapshots = [
            (int(snapshot.get("sequence-number") or 0), snapshot.get("summary"))
            for snapshot in metadata.get("snapshots") or []
        ]
        reached = max(reached, newest_position(snapshots, store_id))
    return reached


#: The first outbox position numbered while `hogflare serve` could not compare the store with
#: the lake as it started, and the newest position the lake then turned out to hold: together
#: they let the shipper tell a store restored from an older backup (whose new rows the lake's
#: older ones would hide) from one that was simply ahead (see ``Shipper._checked``).
UNCHECKED_FROM = "lake.unchecked_from"
UNCHECKED_PAST = "lake.unchecked_past"


def level_with_lake(settings: Settings, store: Store) -> int | None:
    """If the lake holds rows of this store at positions its outbox has not reached, number the
    store's next rows after them; returns that position when it did. A lake that cannot be read
    raises, and the store notes where its unchecked rows begin. Call before the workers start,
    and not in a process that will fork with the store still open."""
    if LAKE_CURSOR not in settings.enabled_sinks:
        return None
    try:
        reached = lake_position(settings.lake_dir, store.id)
    except Exception:
        # Rows are numbered from here on without the lake compared; the shipper compares once it
        # can read the lake (an earlier note of this stands).
        if not store.cursor(UNCHECKED_FROM):
            store.set_cursor(UNCHECKED_FROM, store.outbox_state()[0])
        raise
    return reached if reached and store.advance_outbox(reached) else None


def group_type_conflicts(settings: Settings, store: Store | None = None) -> list[str]:
    """What the store's group types say against ``POSTHOG_GROUP_TYPE_<n>``, one sentence each:
    events of two types would share a slot, and their groups merge. Without ``store``, it is
    opened (and closed on return, so not in a process about to fork with it)."""
    if store is None:
        if not settings.store_dir.is_dir():
            return []
        store = open_store(settings)
    configured = [group_type or None for group_type in settings.group_types]
    said = []
    for token, group_type, slot in store.group_type_conflicts():
        name = repr(group_type) if group_type is not None else "a group type with a long name"
        if configured[slot] is not None and configured[slot] != group_type:
            said.append(
                f"project {token}: slot {slot} holds {name} since its first event there, "
                f"but POSTHOG_GROUP_TYPE_{slot}={configured[slot]}"
            )
        else:
            elsewhere = next((index for index, fixed in enumerate(configured) if fixed == group_type), None)
            where = f"POSTHOG_GROUP_TYPE_{elsewhere} puts it at {elsewhere}" if elsewhere is not None else "not there"
            said.append(f"project {token}: {name} holds slot {slot}, but {where}")
    return said
