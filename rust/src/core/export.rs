//! From the outbox to the lake's Parquet files: read a chunk of rows in order, group them by
//! table and day (the tables' partition), and write one file per table and day.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::DateTime;

use super::columns;
use super::error::Result;
use super::row::{rows_in_entry, EventRowRef, OutboxRecordRef, PersonSnapshotRef};
use super::store::Store;

const MICROS_PER_DAY: i64 = 86_400_000_000;

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
}

/// One Parquet file written for the lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    pub table: Table,
    /// Days since the epoch of the rows' partition column.
    pub day: i32,
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
}

/// What one export did: the outbox position it reached and the files it wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Export {
    /// Outbox positions read, one per row (some may have been skipped as already exported).
    pub positions: u64,
    pub last_seq: u64,
    pub files: Vec<DataFile>,
}

/// Where each table's files go and how far each table already is: entries at or below a
/// table's `upto` are in the lake and are left out.
#[derive(Debug, Clone)]
pub struct Destination<'a> {
    pub events_dir: &'a Path,
    pub events_upto: u64,
    pub persons_dir: &'a Path,
    pub persons_upto: u64,
}

fn day_of(micros: i64) -> i32 {
    micros.div_euclid(MICROS_PER_DAY) as i32
}

fn day_directory(column: &str, day: i32) -> String {
    let date = DateTime::from_timestamp(i64::from(day) * 86_400, 0)
        .map_or_else(|| "1970-01-01".to_owned(), |d| d.format("%Y-%m-%d").to_string());
    format!("{column}_day={date}")
}

fn file_name(last_seq: u64) -> String {
    format!("{last_seq:020}-{}.parquet", uuid::Uuid::now_v7().simple())
}

/// Export the outbox entries after `after` into Parquet files, one per table and day.
pub fn export(store: &Store, after: u64, max_rows: usize, max_bytes: u64, to: &Destination<'_>) -> Result<Export> {
    store.with_outbox(after, max_rows, max_bytes, |entries| {
        let mut export = Export {
            positions: entries.iter().map(|(_, bytes)| rows_in_entry(bytes)).sum(),
            last_seq: after,
            files: Vec::new(),
        };
        let mut events: BTreeMap<i32, Vec<EventRowRef<'_>>> = BTreeMap::new();
        let mut persons: BTreeMap<i32, Vec<PersonSnapshotRef<'_>>> = BTreeMap::new();
        for (seq, bytes) in entries {
            export.last_seq = *seq;
            let (event, person) = OutboxRecordRef::decode(bytes)?.rows();
            if let Some(row) = event.filter(|_| *seq > to.events_upto) {
                events
                    .entry(day_of(row.timestamp.unwrap_or(row.created_at)))
                    .or_default()
                    .push(row);
            }
            if let Some(row) = person.filter(|_| *seq > to.persons_upto) {
                persons.entry(day_of(row.updated_at)).or_default().push(row);
            }
        }
        let last_seq = export.last_seq;
        let mut write = |table: Table, day: i32, rows: usize, file: &dyn Fn(&Path) -> Result<u64>| {
            let (dir, column) = match table {
                Table::Events => (to.events_dir, "timestamp"),
                Table::Persons => (to.persons_dir, "updated_at"),
            };
            let path = dir.join(day_directory(column, day)).join(file_name(last_seq));
            let bytes = file(&path)?;
            export.files.push(DataFile {
                table,
                day,
                path,
                rows: rows as u64,
                bytes,
            });
            Ok::<_, super::error::CoreError>(())
        };
        let written = (|| {
            for (day, rows) in events {
                let refs: Vec<&EventRowRef<'_>> = rows.iter().collect();
                write(Table::Events, day, refs.len(), &|path| {
                    columns::write_events(path, &refs)
                })?;
            }
            for (day, rows) in persons {
                let refs: Vec<&PersonSnapshotRef<'_>> = rows.iter().collect();
                write(Table::Persons, day, refs.len(), &|path| {
                    columns::write_persons(path, &refs)
                })?;
            }
            Ok(())
        })();
        if let Err(err) = written {
            // No commit will reference what was written so far.
            for file in &export.files {
                let _ = std::fs::remove_file(&file.path);
            }
            return Err(err);
        }
        Ok(export)
    })
}
