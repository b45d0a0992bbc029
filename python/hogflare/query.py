"""``hogflare query``: DuckDB over the lake's live Parquet files, with a view per table."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Sequence
from typing import Any

import duckdb
import msgspec
import pyarrow as pa

from hogflare.lake import EVENTS, Lake

#: view name → lake table
VIEWS: dict[str, str] = {"events": EVENTS}


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(lake: Lake) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake's tables as views."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for view, table in VIEWS.items():
        files = lake.data_files(table)
        if files:
            listing = ", ".join(_sql_string(path) for path in files)
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet([{listing}], hive_partitioning = false)")
        else:
            empty = lake.arrow_schema(table).empty_table()
            con.register(f"_{view}_empty", empty)
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM _{view}_empty")
    return con


def run(lake: Lake, sql: str) -> pa.Table:
    con = connect(lake)
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return value


def to_json(table: pa.Table) -> bytes:
    rows = [{key: _plain(value) for key, value in row.items()} for row in table.to_pylist()]
    return msgspec.json.encode(rows)


def to_csv(table: pa.Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow(["" if value is None else _plain(value) for value in row.values()])
    return out.getvalue()


def to_text(table: pa.Table, max_width: int = 60) -> str:
    def cell(value: Any) -> str:
        text = "NULL" if value is None else str(_plain(value))
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    names: Sequence[str] = table.column_names
    rows = [[cell(value) for value in row.values()] for row in table.to_pylist()]
    widths = [max([len(name), *(len(row[i]) for row in rows)]) for i, name in enumerate(names)]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [
        " | ".join(name.ljust(w) for name, w in zip(names, widths, strict=True)),
        line,
        *(" | ".join(value.ljust(w) for value, w in zip(row, widths, strict=True)) for row in rows),
        f"({len(rows)} row{'s' if len(rows) != 1 else ''})",
    ]
    return "\n".join(out) + "\n"
