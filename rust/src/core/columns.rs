//! Outbox rows as Arrow columns, handed to Python as an Arrow IPC stream so pyarrow and
//! pyiceberg can write them without building a Python object per value.

use std::sync::Arc;

use arrow_array::builder::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema, TimeUnit};

use super::error::Result;
use super::row::EventRow;

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The lake's event table, column for column Hogflare's event row. Required columns are the
/// ones the Cloudflare Pipelines schema requires.
pub fn event_schema() -> Schema {
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

fn strings<'a>(rows: &[&'a EventRow], get: impl Fn(&'a EventRow) -> Option<&'a str>) -> ArrayRef {
    let bytes: usize = rows.iter().map(|row| get(row).map_or(0, str::len)).sum();
    let mut builder = StringBuilder::with_capacity(rows.len(), bytes);
    for row in rows {
        builder.append_option(get(row));
    }
    Arc::new(builder.finish())
}

fn timestamps(rows: &[&EventRow], get: impl Fn(&EventRow) -> Option<i64>) -> ArrayRef {
    let mut builder = TimestampMicrosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
    for row in rows {
        builder.append_option(get(row));
    }
    Arc::new(builder.finish())
}

pub fn event_batch(rows: &[&EventRow]) -> Result<RecordBatch> {
    let uuids: Vec<String> = rows.iter().map(|row| row.uuid.hyphenated().to_string()).collect();
    let mut team_ids = Int64Builder::with_capacity(rows.len());
    for row in rows {
        team_ids.append_option(row.team_id);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(arrow_array::StringArray::from_iter_values(&uuids)),
        Arc::new(team_ids.finish()),
        strings(rows, |row| Some(row.source.as_str())),
        strings(rows, |row| Some(row.event.as_str())),
        strings(rows, |row| Some(row.distinct_id.as_str())),
        timestamps(rows, |row| Some(row.created_at)),
        timestamps(rows, |row| row.timestamp),
        strings(rows, |row| row.properties.as_deref()),
        strings(rows, |row| row.context.as_deref()),
        strings(rows, |row| row.person_id.as_deref()),
        timestamps(rows, |row| row.person_created_at),
        strings(rows, |row| row.person_properties.as_deref()),
    ];
    for slot in 0..5 {
        columns.push(strings(rows, |row| row.groups[slot].as_deref()));
    }
    columns.push(strings(rows, |row| row.group_properties.as_deref()));
    columns.push(strings(rows, |row| row.api_key.as_deref()));
    columns.push(strings(rows, |row| row.extra.as_deref()));
    Ok(RecordBatch::try_new(Arc::new(event_schema()), columns)?)
}

/// One record batch as an Arrow IPC stream.
pub fn to_ipc(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(batch.get_array_memory_size() + 1024);
    let mut writer = StreamWriter::try_new(&mut out, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}
