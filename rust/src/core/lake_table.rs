//! The lake's two tables as the core writes them: their names, their Arrow schemas, and which of
//! their JSON columns get a Parquet dictionary. The export and the compaction both write by these.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, TimeUnit};

/// The lake tables the outbox feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Table {
    Events,
    Persons,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Self::Events => "hogflare_events",
            Self::Persons => "hogflare_persons",
        }
    }

    pub fn named(name: &str) -> Option<Self> {
        [Self::Events, Self::Persons]
            .into_iter()
            .find(|table| table.name() == name)
    }

    pub fn schema(self) -> Schema {
        match self {
            Self::Events => event_schema(),
            Self::Persons => person_schema(),
        }
    }

    /// The JSON columns made from a person: the same text on every row of a person who did not
    /// change in between, which a dictionary stores once (a person's events mostly come in runs).
    /// Where every row's person differs, the dictionary fills and the column goes on without one,
    /// at no measurable cost.
    pub fn person_columns(self) -> &'static [&'static str] {
        match self {
            Self::Events => &["person_properties"],
            Self::Persons => &["properties", "properties_set_once", "merged_properties"],
        }
    }
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The lake's event table, column for column Hogflare's event row. Required columns are the
/// ones the Cloudflare Pipelines schema requires.
fn event_schema() -> Schema {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let mut fields = vec![
        text("uuid", false),
        Field::new("team_id", DataType::Int64, true),
        text("source", false),
        text("event", false),
        text("distinct_id", false),
        Field::new("created_at", utc_micros(), false),
        Field::new("timestamp", utc_micros(), true),
        text("properties", true),
        text("context", true),
        text("person_id", true),
        Field::new("person_created_at", utc_micros(), true),
        text("person_properties", true),
    ];
    for slot in 0..5 {
        fields.push(text(&format!("group{slot}"), true));
    }
    fields.extend([
        text("group_properties", true),
        text("api_key", true),
        text("extra", true),
    ]);
    Schema::new(fields)
}

/// The lake's person table: Hogflare's person snapshot row, plus `is_identified`.
fn person_schema() -> Schema {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Schema::new(vec![
        text("uuid", false),
        Field::new("team_id", DataType::Int64, true),
        text("source", false),
        text("operation", false),
        text("person_id", false),
        Field::new("person_int_id", DataType::Int64, false),
        text("canonical_distinct_id", false),
        Field::new("distinct_ids", distinct_ids_type(), false),
        Field::new("created_at", utc_micros(), false),
        Field::new("updated_at", utc_micros(), false),
        Field::new("version", DataType::Int64, false),
        Field::new("is_identified", DataType::Boolean, false),
        text("properties", false),
        text("properties_set_once", false),
        text("merged_properties", false),
        text("api_key", true),
        text("source_event_uuid", false),
    ])
}

/// A list of strings, its element named as Iceberg names it.
fn distinct_ids_type() -> DataType {
    DataType::List(Arc::new(distinct_id_field()))
}

pub(crate) fn distinct_id_field() -> Field {
    Field::new("element", DataType::Utf8, false)
}
