"""What `hogflare query` prints: every column of a result whose names repeat (a join's
``e.*, d.*``), and values Arrow holds in shapes of its own, in each output format."""

from __future__ import annotations

import csv
import io
import json
import subprocess

import duckdb
import pyarrow as pa

from hogflare.query import to_text, unique_names, write_csv, write_json
from tests.conftest import TOKEN, Hogflare, event
from tests.helpers.server import HOGFLARE


def test_repeated_names_are_told_apart_as_duckdb_tells_them() -> None:
    assert unique_names(["a", "a", "a", "A"]) == ["a", "a_1", "a_2", "A_3"]
    assert unique_names(["a", "a", "a_1"]) == ["a", "a_1", "a_1_1"]
    assert unique_names(["uuid", "event"]) == ["uuid", "event"]


def _table() -> pa.Table:
    interval = pa.array([pa.MonthDayNano([14, 3, 4 * 3_600_000_000_000 + 5_500_000_000])], pa.month_day_nano_interval())
    columns = [pa.array(["x"]), pa.array([1]), interval, pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64()))]
    return pa.Table.from_arrays(columns, names=["a", "a", "took", "m"])


def test_intervals_inside_lists_and_structs_print_as_duckdb_prints_them() -> None:
    relation = duckdb.sql("select [interval 2 hours] as b, {'x': interval 3 minutes} as c")
    assert relation is not None
    table = relation.arrow().read_all()
    out = io.BytesIO()
    write_json(table.to_batches(), out)
    assert json.loads(out.getvalue()) == [{"b": ["02:00:00"], "c": {"x": "00:03:00"}}]


def test_every_column_of_a_result_with_repeated_names_is_printed() -> None:
    out = io.BytesIO()
    write_json(_table().to_batches(), out)
    assert json.loads(out.getvalue()) == [
        {"a": "x", "a_1": 1, "took": "1 year 2 months 3 days 04:00:05.5", "m": {"k": 1}}
    ]
    text = io.StringIO()
    write_csv(_table().schema.names, _table().to_batches(), text)
    assert list(csv.reader(io.StringIO(text.getvalue()))) == [
        ["a", "a_1", "took", "m"],
        ["x", "1", "1 year 2 months 3 days 04:00:05.5", '{"k":1}'],
    ]
    printed = to_text(_table()).splitlines()
    assert printed[0].split("|")[1].strip() == "a_1"
    assert printed[2].split("|")[1].strip() == "1"


async def test_a_join_of_the_views_keeps_every_column(hogflare: Hogflare) -> None:
    body = {"api_key": TOKEN, "batch": [event("joined", distinct_id="u-1", properties={"$set": {"plan": "pro"}})]}
    assert (await hogflare.post("/batch/", body)).status_code == 200
    hogflare.rows()  # shipped
    sql = "select e.*, p.* from events e join persons_latest p on e.person_id = p.person_id"
    args = [HOGFLARE, "query", "--data-dir", str(hogflare.settings.data_dir), "--format", "csv", sql]
    header, *rows = csv.reader(io.StringIO(subprocess.run(args, capture_output=True, text=True, check=True).stdout))
    assert len(rows) == 1
    assert len(header) == len(rows[0]) == len(set(header))
    assert header.count("person_id") == 1
    assert "person_id_1" in header
    assert rows[0][header.index("person_id")] == rows[0][header.index("person_id_1")]


def test_a_value_holding_line_breaks_stays_one_csv_field() -> None:
    table = pa.table({"text": ["one\rtwo", "three\nfour", "five\r\nsix"]})
    text = io.StringIO()
    write_csv(table.schema.names, table.to_batches(), text)
    assert list(csv.reader(io.StringIO(text.getvalue(), newline=""))) == [
        ["text"],
        ["one\rtwo"],
        ["three\nfour"],
        ["five\r\nsix"],
    ]


async def test_table_cells_are_cut_unless_asked_not_to_be(hogflare: Hogflare) -> None:
    long_url = "https://shop.example.com/" + "a" * 100
    body = {"api_key": TOKEN, "batch": [event("wide", properties={"$current_url": long_url})]}
    assert (await hogflare.post("/batch/", body)).status_code == 200
    hogflare.rows()  # shipped
    sql = "select properties->>'/$current_url' as url from events"
    base = [HOGFLARE, "query", "--data-dir", str(hogflare.settings.data_dir)]

    def printed(*options: str) -> str:
        return subprocess.run([*base, *options, sql], capture_output=True, text=True, check=True).stdout.splitlines()[2]

    assert printed().strip() == long_url[:59] + "…"
    assert printed("--max-width", "0").strip() == long_url
    assert printed("--max-width", "30").strip() == long_url[:29] + "…"
