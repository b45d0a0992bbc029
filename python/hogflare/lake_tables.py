"""The lake's two tables: Hogflare's event row and person snapshot row as Iceberg schemas, each
partitioned by day, and the table properties they are created with."""

from __future__ import annotations

from typing import Any

from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform
from pyiceberg.types import BooleanType, ListType, LongType, NestedField, StringType, TimestamptzType

from hogflare._hogflare import UNMEASURED_COLUMNS

EVENTS = "hogflare_events"
PERSONS = "hogflare_persons"

#: The JSON text columns' Parquet files carry no min/max statistics (they would prune nothing and
#: cost a sixth of writing a file), so the tables collect no metrics for them.
UNMEASURED_METRICS = {f"write.metadata.metrics.column.{column}": "none" for column in UNMEASURED_COLUMNS}

#: Properties a table made by an earlier version is given when it is opened.
#: A commit records the outbox position the table was at when it was made; pyiceberg's own retry
#: would replay a compaction's snapshot, with that position, on top of a newer one. Every commit
#: that loses is retried by hogflare instead, from the table as it then is.
MAINTAINED_PROPERTIES = {**UNMEASURED_METRICS, "commit.retry.num-retries": "0"}

TABLE_PROPERTIES = {
    "format-version": "2",
    "write.parquet.compression-codec": "zstd",
    "commit.manifest-merge.enabled": "true",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
    **MAINTAINED_PROPERTIES,
}


def _fields(*columns: tuple[str, Any, bool]) -> list[NestedField]:
    return [
        NestedField(field_id=index, name=name, field_type=kind, required=required)
        for index, (name, kind, required) in enumerate(columns, start=1)
    ]


def event_schema() -> Schema:
    """Hogflare's event row, with timestamps as timestamps and JSON columns as JSON text."""
    return Schema(
        *_fields(
            ("uuid", StringType(), True),
            ("team_id", LongType(), False),
            ("source", StringType(), True),
            ("event", StringType(), True),
            ("distinct_id", StringType(), True),
            ("created_at", TimestamptzType(), True),
            ("timestamp", TimestamptzType(), False),
            ("properties", StringType(), False),
            ("context", StringType(), False),
            ("person_id", StringType(), False),
            ("person_created_at", TimestamptzType(), False),
            ("person_properties", StringType(), False),
            *((f"group{slot}", StringType(), False) for slot in range(5)),
            ("group_properties", StringType(), False),
            ("api_key", StringType(), False),
            ("extra", StringType(), False),
        )
    )


def person_schema() -> Schema:
    """Hogflare's person snapshot row, plus ``is_identified``."""
    return Schema(
        *_fields(
            ("uuid", StringType(), True),
            ("team_id", LongType(), False),
            ("source", StringType(), True),
            ("operation", StringType(), True),
            ("person_id", StringType(), True),
            ("person_int_id", LongType(), True),
            ("canonical_distinct_id", StringType(), True),
            ("distinct_ids", ListType(element_id=100, element_type=StringType(), element_required=True), True),
            ("created_at", TimestamptzType(), True),
            ("updated_at", TimestamptzType(), True),
            ("version", LongType(), True),
            ("is_identified", BooleanType(), True),
            ("properties", StringType(), True),
            ("properties_set_once", StringType(), True),
            ("merged_properties", StringType(), True),
            ("api_key", StringType(), False),
            ("source_event_uuid", StringType(), True),
        )
    )


def day_partition(schema: Schema, column: str) -> PartitionSpec:
    source = schema.find_field(column)
    return PartitionSpec(
        PartitionField(source_id=source.field_id, field_id=1000, transform=DayTransform(), name=f"{column}_day")
    )


#: table name → (schema, partition column)
TABLES: dict[str, tuple[Schema, str]] = {
    EVENTS: (event_schema(), "timestamp"),
    PERSONS: (person_schema(), "updated_at"),
}
