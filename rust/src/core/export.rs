//! From the outbox to the lake's Parquet files: read a chunk of rows in order, group the events
//! by day (the table's partition), and write one file per day.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::DateTime;

use super::columns;
use super::error::Result;
use super::row::{EventRowRef, OutboxRecordRef};
use super::store::Store;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// One Parquet file written for the lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Days since the epoch of the rows' `timestamp` (the partition).
    pub day: i32,
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
}

/// What one export did: the outbox position it reached and the files it wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Export {
    /// Outbox entries read (some may have been skipped as already exported).
    pub entries: u64,
    pub last_seq: u64,
    pub files: Vec<DataFile>,
}

fn day_of(row: &EventRowRef<'_>) -> i32 {
    row.timestamp.unwrap_or(row.created_at).div_euclid(MICROS_PER_DAY) as i32
}

fn day_directory(day: i32) -> String {
    let date = DateTime::from_timestamp(i64::from(day) * 86_400, 0)
        .map_or_else(|| "1970-01-01".to_owned(), |d| d.format("%Y-%m-%d").to_string());
    format!("timestamp_day={date}")
}

/// Export the events after `after` (skipping those at or below `skip_upto`, which the lake
/// already holds) into Parquet files under `data_dir`, one per day.
pub fn export_events(
    store: &Store,
    after: u64,
    skip_upto: u64,
    max_rows: usize,
    max_bytes: u64,
    data_dir: &Path,
) -> Result<Export> {
    store.with_outbox(after, max_rows, max_bytes, |entries| {
        let mut export = Export {
            entries: entries.len() as u64,
            last_seq: after,
            files: Vec::new(),
        };
        let mut by_day: BTreeMap<i32, Vec<EventRowRef<'_>>> = BTreeMap::new();
        for (seq, bytes) in entries {
            export.last_seq = *seq;
            if *seq <= skip_upto {
                continue;
            }
            match OutboxRecordRef::decode(bytes)? {
                OutboxRecordRef::Event(row) => by_day.entry(day_of(&row)).or_default().push(row),
            }
        }
        for (day, rows) in by_day {
            let name = format!("{:020}-{}.parquet", export.last_seq, uuid::Uuid::now_v7().simple());
            let path = data_dir.join(day_directory(day)).join(name);
            let refs: Vec<&EventRowRef<'_>> = rows.iter().collect();
            let bytes = columns::write_parquet(&refs, &path)?;
            export.files.push(DataFile {
                day,
                path,
                rows: rows.len() as u64,
                bytes,
            });
        }
        Ok(export)
    })
}
