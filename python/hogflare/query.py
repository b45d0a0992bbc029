"""``hogflare query``: DuckDB over the lake's live Parquet files, with a view per table and the
views PostHog users expect on top: ``persons_latest``, ``person_distinct_ids`` and ``groups``."""

from __future__ import annotations

import base64
import contextlib
import csv
import datetime as dt
import io
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any, NamedTuple

import duckdb
import msgspec
import pyarrow as pa

from hogflare.lake import Lake
from hogflare.lake_tables import EVENTS, PERSONS

#: view name → lake table
VIEWS: dict[str, str] = {"events": EVENTS, "persons": PERSONS}


def _json_pointer(key_sql: str) -> str:
    """A JSON Pointer to the member named by the SQL expression ``key_sql``: unlike a JSONPath
    it reaches any name (empty, or holding quotes, dots or slashes)."""
    return f"'/' || replace(replace({key_sql}, '~', '~0'), '/', '~1')"


_GROUP_TYPE = """json_extract_string(properties, '$."$group_type"')"""


def _falsy(key: str) -> str:
    """Whether JavaScript reads the event property ``key`` as false (`0`, `false`, `""`): PostHog
    identifies no group by such a type or key, though its row may map the same `$groups`."""
    raw = f"""json_extract(properties, '$."{key}"')"""
    return f"""coalesce({raw}::VARCHAR IN ('false', '""') OR json_type({raw}) IN ('UBIGINT', 'BIGINT', 'DOUBLE')
                AND try_cast({raw}::VARCHAR AS DOUBLE) = 0, false)"""


#: Views over those: each live person's newest snapshot, per project (with `POSTHOG_TEAM_ID` set
#: two projects' persons of one distinct id share a uuid; a merged-away person's last snapshot
#: says `merged`); each distinct id's person now, which an event's `person_id` may not be (the
#: person it had then was merged into another since, as PostHog's person overrides record); and
#: each group as its latest `$groupidentify` left it (its slot from `$group_type_index`; rows
#: stored before that property was written find it among their group columns).
DERIVED_VIEWS: dict[str, str] = {
    "persons_latest": """
        SELECT * EXCLUDE (newest) FROM (
            SELECT *, row_number() OVER (
                PARTITION BY api_key, person_id ORDER BY version DESC, updated_at DESC, uuid DESC
            ) AS newest
            FROM persons
        ) WHERE newest = 1 AND operation <> 'merged'
    """,
    "person_distinct_ids": """
        SELECT api_key, team_id, unnest(distinct_ids) AS distinct_id, person_id FROM persons_latest
    """,
    "groups": f"""
        SELECT api_key, team_id, group_type, group_type_index, group_key,
               json_extract(group_properties, {_json_pointer("group_type")})::VARCHAR AS group_properties,
               updated_at
        FROM (
            SELECT api_key, team_id,
                   json_extract_string(properties, '$."$group_type"') AS group_type,
                   json_extract_string(properties, '$."$group_key"') AS group_key,
                   coalesce(
                       try_cast(json_extract_string(properties, '$."$group_type_index"') AS INTEGER),
                       list_position([group0, group1, group2, group3, group4],
                                     json_extract_string(properties, '$."$group_key"')) - 1
                   ) AS group_type_index,
                   group_properties,
                   timestamp AS updated_at,
                   row_number() OVER (
                       PARTITION BY api_key, json_extract_string(properties, '$."$group_type"'),
                                    json_extract_string(properties, '$."$group_key"')
                       ORDER BY created_at DESC, timestamp DESC, uuid DESC
                   ) AS newest
            FROM events
            WHERE event = '$groupidentify'
              -- A type refused a slot (a sixth) made no group, nor did a type or key read as false.
              AND json_extract(group_properties, {_json_pointer(_GROUP_TYPE)}) IS NOT NULL
              AND NOT {_falsy("$group_type")} AND NOT {_falsy("$group_key")}
        ) WHERE newest = 1
    """,
}


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


#: Told a table's data files that the catalog lists and the disk no longer has.
MissingFiles = Callable[[str, list[str]], None]


def _refuse_missing(table: str, missing: list[str]) -> None:
    raise FileNotFoundError(f"{len(missing)} data file(s) of {table} are missing, first {missing[0]}")


def connect(lake: Lake, on_missing: MissingFiles = _refuse_missing) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake's tables as views.

    A data file the catalog lists but the disk lacks (a partial copy, a file deleted by hand)
    goes to ``on_missing``; unless it raises, the views read the files that are there."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for view, table in VIEWS.items():
        files = lake.data_files(table)
        missing = [path for path in files if not os.path.exists(path)]
        if missing:
            on_missing(table, missing)
            gone = set(missing)
            files = [path for path in files if path not in gone]
        if files:
            listing = ", ".join(_sql_string(path) for path in files)
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet([{listing}], hive_partitioning = false)")
        else:
            empty = lake.arrow_schema(table).empty_table()
            con.register(f"_{view}_empty", empty)
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM _{view}_empty")
    for view, sql in DERIVED_VIEWS.items():
        con.execute(f"CREATE VIEW {view} AS {sql}")
    return con


#: Rows fetched from DuckDB at a time when a result is written as it comes.
BATCH_ROWS = 10_000


class QueryError(Exception):
    """DuckDB refused the SQL or failed while producing its rows; the message is DuckDB's."""


class Result(NamedTuple):
    schema: pa.Schema
    #: The rows, a batch at a time; read once.
    batches: Iterator[pa.RecordBatch]


def run(lake: Lake, sql: str) -> pa.Table:
    with results(lake, sql) as result:
        return collect(result)


def collect(result: Result) -> pa.Table:
    """The whole result in memory."""
    return pa.Table.from_batches(list(result.batches), schema=result.schema)


@contextlib.contextmanager
def results(lake: Lake, sql: str, on_missing: MissingFiles = _refuse_missing) -> Iterator[Result]:
    """The rows of ``sql`` as they come, so a result larger than memory can be written out.

    DuckDB's errors, when it plans the query or later while producing rows, are ``QueryError``."""
    con = connect(lake, on_missing)
    try:
        try:
            reader = con.sql(sql).to_arrow_reader(BATCH_ROWS)
        except duckdb.Error as exc:
            raise QueryError(str(exc)) from exc
        yield Result(reader.schema, _checked(reader))
    finally:
        con.close()


def _checked(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    # An error met while streaming reaches pyarrow's reader, which raises it as its own kind.
    batches = iter(reader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (duckdb.Error, pa.ArrowException, OSError) as exc:
            raise QueryError(str(exc)) from exc
        yield batch


#: Sums and other wide integers come back as decimals: numbers in JSON, not strings.
_JSON = msgspec.json.Encoder(decimal_format="number")


def _plain(value: Any) -> Any:
    if isinstance(value, pa.MonthDayNano):  # a tuple: before lists and tuples
        return _interval(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _interval(value: pa.MonthDayNano) -> str:
    """An interval as DuckDB writes one (``1 year 2 months 3 days 04:05:06.5``), not the
    three numbers Arrow keeps it as."""
    years, months = divmod(abs(value.months), 12)
    if value.months < 0:
        years, months = -years, -months
    parts = [
        f"{n} {unit}{'' if abs(n) == 1 else 's'}"
        for n, unit in ((years, "year"), (months, "month"), (value.days, "day"))
        if n
    ]
    if value.nanoseconds or not parts:
        sign = "-" if value.nanoseconds < 0 else ""
        micros = abs(value.nanoseconds) // 1_000
        seconds, micros = divmod(micros, 1_000_000)
        minutes, seconds = divmod(seconds, 60)
        hours, minutes = divmod(minutes, 60)
        fraction = f".{micros:06d}".rstrip("0") if micros else ""
        parts.append(f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}{fraction}")
    return " ".join(parts)


def _text(value: Any) -> str:
    """A value in a CSV field or a table cell: lists, structs and maps as JSON, not Python's repr."""
    value = _plain(value)
    if isinstance(value, list | dict | tuple):
        return _JSON.encode(value).decode()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()  # as JSON writes them
    return str(value)


def unique_names(names: Sequence[str]) -> list[str]:
    """Column names with repeats told apart as DuckDB's own exports do (``a``, ``a_1``, ``a_2``;
    case aside), so ``select e.*, d.*`` keeps every column: a JSON object cannot hold a key twice,
    and a CSV header that does is read by name wrongly."""
    seen: set[str] = set()
    counts: dict[str, int] = {}
    out = []
    for name in names:
        unique = name
        while unique.lower() in seen:
            counts[name.lower()] = counts.get(name.lower(), 0) + 1
            unique = f"{name}_{counts[name.lower()]}"
        seen.add(unique.lower())
        out.append(unique)
    return out


def _rows(table: pa.Table | pa.RecordBatch) -> list[tuple[Any, ...]]:
    """The rows as Python values, in column order; a MAP column's values as objects (Arrow gives
    lists of pairs)."""
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        values = column.to_pylist()
        if pa.types.is_map(field.type):
            values = [None if pairs is None else {str(key): value for key, value in pairs} for pairs in values]
        columns.append(values)
    return list(zip(*columns, strict=True))


def write_json(batches: Iterable[pa.RecordBatch], out: IO[bytes]) -> None:
    """One JSON array of row objects, written a batch of rows at a time."""
    separator = b"["
    for batch in batches:
        keys = unique_names(batch.schema.names)
        rows = [dict(zip(keys, map(_plain, row), strict=True)) for row in _rows(batch)]
        if rows:
            out.write(separator + _JSON.encode(rows)[1:-1])
            separator = b","
    out.write(b"[]" if separator == b"[" else b"]")


def write_csv(names: Sequence[str], batches: Iterable[pa.RecordBatch], out: IO[str]) -> None:
    """A header line, then the rows a batch at a time; lines end with CRLF, as RFC 4180 has them
    (with a bare LF, Python's writer would leave a value holding a CR unquoted)."""
    writer = csv.writer(out)
    writer.writerow(unique_names(names))
    for batch in batches:
        writer.writerows(["" if value is None else _text(value) for value in row] for row in _rows(batch))


def to_json(table: pa.Table) -> bytes:
    out = io.BytesIO()
    write_json(table.to_batches(), out)
    return out.getvalue()


def to_text(table: pa.Table, max_width: int = 60) -> str:
    """``table`` as aligned text, each cell cut to ``max_width`` characters (0: never cut)."""

    def cell(value: Any) -> str:
        text = "NULL" if value is None else _text(value).replace("\n", "\\n")
        return text if not max_width or len(text) <= max_width else text[: max_width - 1] + "…"

    names = unique_names(table.column_names)
    rows = [[cell(value) for value in row] for row in _rows(table)]
    widths = [max([len(name), *(len(row[i]) for row in rows)]) for i, name in enumerate(names)]
    line = "+".join("-" * (w + 2) for w in widths)
    # Each cell has a space on either side, so the separator's `+` falls under each `|`.
    out = [
        " " + " | ".join(name.ljust(w) for name, w in zip(names, widths, strict=True)),
        line,
        *(" " + " | ".join(value.ljust(w) for value, w in zip(row, widths, strict=True)) for row in rows),
        f"({len(rows)} row{'s' if len(rows) != 1 else ''})",
    ]
    return "\n".join(out) + "\n"
