//! Outbox rows as Arrow columns, written straight to Parquet: the lake's data files are made
//! here, one per day, without passing through Python objects.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::error::{CoreError, Result};
use super::row::EventRowRef;

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

fn strings<'a>(rows: &[&EventRowRef<'a>], get: impl Fn(&EventRowRef<'a>) -> Option<&'a str>) -> ArrayRef {
    let bytes: usize = rows.iter().map(|row| get(row).map_or(0, str::len)).sum();
    let mut builder = StringBuilder::with_capacity(rows.len(), bytes);
    for row in rows {
        builder.append_option(get(row));
    }
    Arc::new(builder.finish())
}

fn timestamps(rows: &[&EventRowRef<'_>], get: impl Fn(&EventRowRef<'_>) -> Option<i64>) -> ArrayRef {
    let mut builder = TimestampMicrosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
    for row in rows {
        builder.append_option(get(row));
    }
    Arc::new(builder.finish())
}

pub fn event_batch(rows: &[&EventRowRef<'_>]) -> Result<RecordBatch> {
    let mut uuids = StringBuilder::with_capacity(rows.len(), rows.len() * 36);
    let mut buffer = uuid::Uuid::encode_buffer();
    for row in rows {
        uuids.append_value(row.uuid.hyphenated().encode_lower(&mut buffer));
    }
    let mut team_ids = Int64Builder::with_capacity(rows.len());
    for row in rows {
        team_ids.append_option(row.team_id);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(uuids.finish()),
        Arc::new(team_ids.finish()),
        strings(rows, |row| Some(row.source)),
        strings(rows, |row| Some(row.event)),
        strings(rows, |row| Some(row.distinct_id)),
        timestamps(rows, |row| Some(row.created_at)),
        timestamps(rows, |row| row.timestamp),
        strings(rows, |row| row.properties),
        strings(rows, |row| row.context),
        strings(rows, |row| row.person_id),
        timestamps(rows, |row| row.person_created_at),
        strings(rows, |row| row.person_properties),
    ];
    for slot in 0..5 {
        columns.push(strings(rows, |row| row.groups[slot]));
    }
    columns.push(strings(rows, |row| row.group_properties));
    columns.push(strings(rows, |row| row.api_key));
    columns.push(strings(rows, |row| row.extra));
    Ok(RecordBatch::try_new(Arc::new(event_schema()), columns)?)
}

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_max_row_group_row_count(Some(1 << 20))
        .set_created_by("hogflare".into())
        .build()
}

fn write_batch(file: File, batch: &RecordBatch) -> Result<File> {
    let encoding = |err: parquet::errors::ParquetError| CoreError::Encoding(err.to_string());
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(writer_properties())).map_err(encoding)?;
    writer.write(batch).map_err(encoding)?;
    writer.into_inner().map_err(encoding)
}

/// Write rows to a new Parquet file (created with a temporary name, then renamed into place,
/// so a reader never sees half a file).
pub fn write_parquet(rows: &[&EventRowRef<'_>], path: &Path) -> Result<u64> {
    let batch = event_batch(rows)?;
    let temporary = path.with_extension("parquet.tmp");
    let io = |err: std::io::Error| CoreError::Store(format!("cannot write {}: {err}", path.display()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let file = File::create(&temporary).map_err(io)?;
    let file = match write_batch(file, &batch) {
        Ok(file) => file,
        Err(err) => {
            let _ = std::fs::remove_file(&temporary);
            return Err(err);
        }
    };
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)?;
    // The rename is only durable once the directory entry is.
    if let Some(parent) = path.parent() {
        File::open(parent)
            .and_then(|directory| directory.sync_all())
            .map_err(io)?;
    }
    Ok(std::fs::metadata(path).map_err(io)?.len())
}
