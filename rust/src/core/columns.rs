//! Outbox rows as Arrow columns, written straight to Parquet: the lake's data files are made
//! here, one per day, without passing through Python objects.

use std::collections::hash_map::Entry;
use std::fs::File;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use ahash::AHashMap;
use arrow_array::builder::{BooleanBuilder, Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::error::{CoreError, Result};
use super::lake_table::{distinct_id_field, Table};
use super::row::{EventRowRef, PersonSnapshotRef};

/// Rows per Arrow batch handed to the Parquet writer: the column builders of a slice stay a few
/// megabytes, made to their exact size, instead of growing (and being copied, and their fresh
/// pages faulted in) to the size of a whole export.
pub(crate) const SLICE_ROWS: usize = 2048;

/// A row group is closed once its encoded columns hold this much memory: an export's chunk stays
/// below it, and a compaction of many files writes several row groups instead of holding a
/// million rows' pages at once.
const ROW_GROUP_MEMORY: usize = 128 << 20;

fn strings<'r, T: 'r>(rows: &[&'r T], get: impl Fn(&'r T) -> Option<&'r str>) -> ArrayRef {
    let bytes = rows.iter().map(|row| get(row).map_or(0, str::len)).sum();
    let mut builder = StringBuilder::with_capacity(rows.len(), bytes);
    for row in rows {
        builder.append_option(get(row));
    }
    Arc::new(builder.finish())
}

/// The properties `$set_once` wrote (`once`) or the others, written straight into the column.
fn split_properties(rows: &[&PersonSnapshotRef<'_>], once: bool) -> Result<ArrayRef> {
    let bytes = rows.iter().map(|row| row.person.json().len()).sum();
    let mut builder = StringBuilder::with_capacity(rows.len(), bytes);
    // The rows of a person who did not change share its stored bytes (and sit among other
    // persons' rows when the events came in several requests): each such person is split once,
    // and its later rows copy the column's earlier value.
    let mut split_at: AHashMap<_, std::ops::Range<usize>> = AHashMap::new();
    let mut earlier = String::new();
    for row in rows {
        let start = builder.values_slice().len();
        match split_at.entry(row.person.properties_key()) {
            Entry::Occupied(split) => {
                let bytes = &builder.values_slice()[split.get().clone()];
                earlier.clear();
                let text = simdutf8::basic::from_utf8(bytes)
                    .map_err(|_| CoreError::Encoding("a person's split properties are not UTF-8".into()))?;
                earlier.push_str(text);
                builder.append_value(&earlier);
            }
            Entry::Vacant(split) => {
                row.person.write_split(once, &mut builder);
                builder.append_value("");
                split.insert(start..builder.values_slice().len());
            }
        }
    }
    Ok(Arc::new(builder.finish()))
}

fn timestamps<T>(rows: &[&T], get: impl Fn(&T) -> Option<i64>) -> ArrayRef {
    let mut builder = TimestampMicrosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
    for row in rows {
        builder.append_option(get(row));
    }
    Arc::new(builder.finish())
}

fn integers<T>(rows: &[&T], get: impl Fn(&T) -> Option<i64>) -> ArrayRef {
    let mut builder = Int64Builder::with_capacity(rows.len());
    for row in rows {
        builder.append_option(get(row));
    }
    Arc::new(builder.finish())
}

fn uuids<T>(rows: &[&T], get: impl Fn(&T) -> uuid::Uuid) -> ArrayRef {
    let mut builder = StringBuilder::with_capacity(rows.len(), rows.len() * 36);
    let mut buffer = uuid::Uuid::encode_buffer();
    for row in rows {
        builder.append_value(get(row).hyphenated().encode_lower(&mut buffer));
    }
    Arc::new(builder.finish())
}

fn person_batch(rows: &[&PersonSnapshotRef<'_>]) -> Result<RecordBatch> {
    let mut distinct_ids = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(distinct_id_field()));
    let mut identified = BooleanBuilder::with_capacity(rows.len());
    for row in rows {
        for id in row.person.distinct_ids.iter() {
            distinct_ids.values().append_value(id);
        }
        distinct_ids.append(true);
        identified.append_value(row.person.is_identified);
    }
    let columns: Vec<ArrayRef> = vec![
        uuids(rows, |row| row.uuid),
        integers(rows, |row| row.team_id),
        strings(rows, |_| Some(super::row::SOURCE_HOGFLARE)),
        strings(rows, |row| Some(row.operation)),
        uuids(rows, |row| row.person.uuid),
        integers(rows, |row| i64::try_from(row.person.id).ok()),
        strings(rows, |row| Some(row.canonical_distinct_id)),
        Arc::new(distinct_ids.finish()),
        timestamps(rows, |row| Some(row.person.created_at)),
        timestamps(rows, |row| Some(row.updated_at)),
        integers(rows, |row| i64::try_from(row.person.version).ok()),
        Arc::new(identified.finish()),
        split_properties(rows, false)?,
        split_properties(rows, true)?,
        strings(rows, |row| Some(row.person.json())),
        strings(rows, |row| row.api_key),
        uuids(rows, |row| row.source_event_uuid),
    ];
    Ok(RecordBatch::try_new(Arc::new(Table::Persons.schema()), columns)?)
}

fn event_batch(rows: &[&EventRowRef<'_>]) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = vec![
        uuids(rows, |row| row.uuid),
        integers(rows, |row| row.team_id),
        strings(rows, |row| Some(row.source)),
        strings(rows, |row| Some(row.event)),
        strings(rows, |row| Some(row.distinct_id)),
        timestamps(rows, |row| Some(row.created_at)),
        timestamps(rows, |row| row.timestamp),
        strings(rows, |row| row.properties),
        strings(rows, |row| row.context),
        strings(rows, |row| row.person_id),
        timestamps(rows, |row| row.person_created_at),
        strings(rows, |row| row.person_properties.as_deref()),
    ];
    for slot in 0..5 {
        columns.push(strings(rows, |row| row.groups[slot]));
    }
    columns.push(strings(rows, |row| row.group_properties));
    columns.push(strings(rows, |row| row.api_key));
    columns.push(strings(rows, |row| row.extra));
    Ok(RecordBatch::try_new(Arc::new(Table::Events.schema()), columns)?)
}

/// Columns of JSON text. Values are often a kilobyte or more and min/max statistics (long shared
/// prefixes, compared in full) prune nothing, so there are none; the lake's tables collect no
/// metrics for them either (the extension exports the list as `UNMEASURED_COLUMNS`). An event's
/// own JSON differs from every other's, so a dictionary never pays for itself; a person's recurs
/// on each of its events in a file (`Table::person_columns`).
pub const JSON_COLUMNS: [&str; 7] = [
    "properties",
    "context",
    "person_properties",
    "group_properties",
    "extra",
    "properties_set_once",
    "merged_properties",
];

/// One value per row: no dictionary. Their statistics stay (UUIDv7s are ordered by time).
const UNIQUE_COLUMNS: [&str; 2] = ["uuid", "source_event_uuid"];

/// The `created_by` of the lake's files: a compaction copies their encoded columns as they are.
pub(crate) const CREATED_BY: &str = "hogflare";

/// `with_dictionary`: the JSON columns that get one.
fn writer_properties(with_dictionary: &[&str]) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_max_row_group_row_count(Some(1 << 20))
        .set_created_by(CREATED_BY.into());
    for column in JSON_COLUMNS {
        builder = builder
            .set_column_dictionary_enabled(ColumnPath::from(column), with_dictionary.contains(&column))
            .set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
    }
    for column in UNIQUE_COLUMNS {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    builder.build()
}

/// Write rows to a new Parquet file, a slice at a time (created with a temporary name, then
/// renamed into place, so a reader never sees half a file). On an error nothing is left behind.
pub fn write_parquet(path: &Path, table: Table, batches: impl Iterator<Item = Result<RecordBatch>>) -> Result<u64> {
    write_file(path, |file| write_batches(file, table, batches))
}

/// Make a new file with `write` under a temporary name, sync it and rename it into place,
/// durably; returns its size. On an error nothing is left behind.
pub(crate) fn write_file(path: &Path, write: impl FnOnce(File) -> Result<File>) -> Result<u64> {
    let temporary = path.with_extension("parquet.tmp");
    let io = |err: std::io::Error| CoreError::Store(format!("cannot write {}: {err}", path.display()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let file = File::create(&temporary).map_err(io)?;
    // A panic would be a bug some rows reach: as an error, the chunk is retried and its files
    // are cleaned up like after any failure, instead of ending the shipper's thread.
    let encoded = std::panic::catch_unwind(AssertUnwindSafe(|| write(file))).unwrap_or_else(|_| {
        Err(CoreError::Encoding(format!(
            "cannot write {}: internal error",
            path.display()
        )))
    });
    let written = encoded.and_then(|file| {
        file.sync_all().map_err(io)?;
        std::fs::rename(&temporary, path).map_err(io)?;
        // The rename is only durable once the directory entry is.
        if let Some(parent) = path.parent() {
            File::open(parent)
                .and_then(|directory| directory.sync_all())
                .map_err(io)?;
        }
        Ok(std::fs::metadata(path).map_err(io)?.len())
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
        let _ = std::fs::remove_file(path);
    }
    written
}

fn write_batches(file: File, table: Table, batches: impl Iterator<Item = Result<RecordBatch>>) -> Result<File> {
    let encoding = |err: parquet::errors::ParquetError| CoreError::Encoding(err.to_string());
    let properties = writer_properties(table.person_columns());
    let mut writer = ArrowWriter::try_new(file, Arc::new(table.schema()), Some(properties)).map_err(encoding)?;
    for batch in batches {
        writer.write(&batch?).map_err(encoding)?;
        if writer.memory_size() >= ROW_GROUP_MEMORY {
            writer.flush().map_err(encoding)?;
        }
    }
    writer.into_inner().map_err(encoding)
}

/// An event table file of `rows`.
pub fn write_events(path: &Path, rows: &[&EventRowRef<'_>]) -> Result<u64> {
    write_parquet(path, Table::Events, rows.chunks(SLICE_ROWS).map(event_batch))
}

/// A person table file of `rows`.
pub fn write_persons(path: &Path, rows: &[&PersonSnapshotRef<'_>]) -> Result<u64> {
    write_parquet(path, Table::Persons, rows.chunks(SLICE_ROWS).map(person_batch))
}

#[cfg(test)]
mod tests {
    use arrow_array::{Array, StringArray};
    use uuid::Uuid;

    use super::*;
    use crate::core::person::{Person, PropertyUpdate};
    use crate::core::person_record::PersonRef;

    fn encoded(set: &[(&str, &str)], set_once: &[(&str, &str)]) -> Vec<u8> {
        let person = Person::new(1, Uuid::nil(), 0, "user", &PropertyUpdate::of(set, set_once, &[]));
        let mut bytes = Vec::new();
        person.encode(&mut bytes);
        bytes
    }

    fn snapshot(person: PersonRef<'_>) -> PersonSnapshotRef<'_> {
        PersonSnapshotRef {
            uuid: Uuid::nil(),
            team_id: None,
            operation: "capture",
            person,
            canonical_distinct_id: "user",
            updated_at: 0,
            api_key: None,
            source_event_uuid: Uuid::nil(),
        }
    }

    fn column(rows: &[PersonSnapshotRef<'_>], once: bool) -> Vec<String> {
        let rows: Vec<_> = rows.iter().collect();
        let array = split_properties(&rows, once).unwrap();
        let strings = array.as_any().downcast_ref::<StringArray>().unwrap();
        (0..strings.len()).map(|i| strings.value(i).to_owned()).collect()
    }

    #[test]
    fn rows_sharing_a_held_person_and_rows_of_other_persons_each_show_their_own_split() {
        let pro = encoded(&[("plan", r#""pro""#)], &[("ref", r#""ad""#)]);
        // Of the same length as `pro`: only where they lie tells them apart.
        let basic = encoded(&[("plan", r#""bas""#)], &[("ref", r#""tv""#)]);
        let copy = pro.clone();
        let held = PersonRef::parse(&pro).unwrap();
        let basic = PersonRef::parse(&basic).unwrap();
        let rows = [
            snapshot(held),
            snapshot(held),
            snapshot(basic),
            snapshot(held),
            snapshot(basic),
            snapshot(PersonRef::parse(&copy).unwrap()),
        ];
        let (pro_set, basic_set) = (r#"{"plan":"pro"}"#, r#"{"plan":"bas"}"#);
        assert_eq!(
            column(&rows, false),
            [pro_set, pro_set, basic_set, pro_set, basic_set, pro_set]
        );
        let (ad, tv) = (r#"{"ref":"ad"}"#, r#"{"ref":"tv"}"#);
        assert_eq!(column(&rows, true), [ad, ad, tv, ad, tv, ad]);
    }
}
