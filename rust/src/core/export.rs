//! From the outbox to the lake's Parquet files: read a chunk of rows in order, group them by
//! table and day (the tables' partition), and write one file per table and day, or several when
//! a large one is shared out among the writer threads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use chrono::DateTime;

use super::columns;
use super::error::Result;
use super::lake_table::Table;
use super::row::{EventRowRef, PersonSnapshotRef};
use super::store::Store;

const MICROS_PER_DAY: i64 = 86_400_000_000;

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

/// A file's worth of one table's rows of one day.
enum Rows<'s, 'r> {
    Events(&'s [EventRowRef<'r>]),
    Persons(&'s [PersonSnapshotRef<'r>]),
}

struct Job<'s, 'r> {
    table: Table,
    day: i32,
    rows: Rows<'s, 'r>,
}

impl Job<'_, '_> {
    fn len(&self) -> usize {
        match self.rows {
            Rows::Events(rows) => rows.len(),
            Rows::Persons(rows) => rows.len(),
        }
    }

    fn write(&self, path: &Path) -> Result<u64> {
        match self.rows {
            Rows::Events(rows) => columns::write_events(path, &rows.iter().collect::<Vec<_>>()),
            Rows::Persons(rows) => columns::write_persons(path, &rows.iter().collect::<Vec<_>>()),
        }
    }
}

/// No file is cut smaller than this to keep another writer busy: many small files cost the
/// lake's readers more than the export saves.
const MIN_SPLIT_ROWS: usize = 8_192;

/// Cut each table and day's rows into files of about the same size, enough of them to give every
/// writer a share of a large chunk.
fn jobs<'s, 'r>(
    events: &'s BTreeMap<i32, Vec<EventRowRef<'r>>>,
    persons: &'s BTreeMap<i32, Vec<PersonSnapshotRef<'r>>>,
    writers: usize,
) -> Vec<Job<'s, 'r>> {
    let total: usize = events.values().map(Vec::len).sum::<usize>() + persons.values().map(Vec::len).sum::<usize>();
    let share = total.div_ceil(writers.max(1)).max(1);
    let parts = |len: usize| len.div_ceil(share).min(len / MIN_SPLIT_ROWS).max(1);
    let mut jobs = Vec::new();
    cut(events, Table::Events, Rows::Events, parts, &mut jobs);
    cut(persons, Table::Persons, Rows::Persons, parts, &mut jobs);
    jobs
}

fn cut<'s, 'r, T>(
    days: &'s BTreeMap<i32, Vec<T>>,
    table: Table,
    rows_of: impl Fn(&'s [T]) -> Rows<'s, 'r>,
    parts: impl Fn(usize) -> usize,
    jobs: &mut Vec<Job<'s, 'r>>,
) {
    for (&day, rows) in days {
        let size = rows.len().div_ceil(parts(rows.len())).max(1);
        jobs.extend(rows.chunks(size).map(|rows| Job {
            table,
            day,
            rows: rows_of(rows),
        }));
    }
}

/// Write every job's file, on up to `writers` threads, the largest first; the files come back in
/// the jobs' order. On an error, nothing written is kept.
fn write_all(
    jobs: &[Job<'_, '_>],
    writers: usize,
    path_of: impl Fn(&Job<'_, '_>) -> PathBuf + Sync,
) -> Result<Vec<DataFile>> {
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&index| std::cmp::Reverse(jobs[index].len()));
    let next = AtomicUsize::new(0);
    let written: Mutex<Vec<(usize, Result<DataFile>)>> = Mutex::new(Vec::with_capacity(jobs.len()));
    let work = || {
        while let Some(&index) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            let job = &jobs[index];
            let path = path_of(job);
            let file = job.write(&path).map(|bytes| DataFile {
                table: job.table,
                day: job.day,
                path,
                rows: job.len() as u64,
                bytes,
            });
            let failed = file.is_err();
            written
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((index, file));
            if failed {
                // The others finish the file they are writing and stop.
                next.store(order.len(), Ordering::Relaxed);
            }
        }
    };
    let helpers = writers.clamp(1, jobs.len().max(1)) - 1;
    std::thread::scope(|scope| {
        for _ in 0..helpers {
            scope.spawn(work);
        }
        work();
    });
    let mut written = written.into_inner().unwrap_or_else(PoisonError::into_inner);
    written.sort_by_key(|(index, _)| *index);
    let mut files = Vec::with_capacity(written.len());
    let mut error = None;
    for (_, file) in written {
        match file {
            Ok(file) => files.push(file),
            Err(err) => error = error.or(Some(err)),
        }
    }
    match error {
        None => Ok(files),
        Some(err) => {
            // No commit will reference what was written.
            for file in &files {
                let _ = std::fs::remove_file(&file.path);
            }
            Err(err)
        }
    }
}

/// Export the outbox entries after `after` into Parquet files, one or more per table and day,
/// written by up to `writers` threads.
pub fn export(
    store: &Store,
    after: u64,
    max_rows: usize,
    max_bytes: u64,
    to: &Destination<'_>,
    writers: usize,
) -> Result<Export> {
    store.with_outbox(after, max_rows, max_bytes, |read| {
        let mut export = Export {
            positions: read.positions(),
            last_seq: after,
            files: Vec::new(),
        };
        let mut events: BTreeMap<i32, Vec<EventRowRef<'_>>> = BTreeMap::new();
        let mut persons: BTreeMap<i32, Vec<PersonSnapshotRef<'_>>> = BTreeMap::new();
        let entries = read.entries.len();
        read.for_each_row(|seq, event, person| {
            export.last_seq = seq;
            if let Some(row) = event.filter(|_| seq > to.events_upto) {
                day_rows(&mut events, day_of(row.timestamp.unwrap_or(row.created_at)), entries).push(row);
            }
            if let Some(row) = person.filter(|_| seq > to.persons_upto) {
                day_rows(&mut persons, day_of(row.updated_at), entries).push(row);
            }
            Ok(())
        })?;
        let last_seq = export.last_seq;
        let jobs = jobs(&events, &persons, writers);
        export.files = write_all(&jobs, writers, |job| {
            let (dir, column) = match job.table {
                Table::Events => (to.events_dir, "timestamp"),
                Table::Persons => (to.persons_dir, "updated_at"),
            };
            dir.join(day_directory(column, job.day)).join(file_name(last_seq))
        })?;
        Ok(export)
    })
}

/// The rows of `day`. The first day of a read gets room for a row of every entry (a chunk is
/// almost always of one day): rows are a few hundred bytes each, and a vector grown by doubling
/// to a chunk's tens of thousands copied them and faulted in fresh pages about twice over.
/// Another day's rows grow as they come.
fn day_rows<T>(days: &mut BTreeMap<i32, Vec<T>>, day: i32, entries: usize) -> &mut Vec<T> {
    let capacity = if days.is_empty() { entries } else { 0 };
    days.entry(day).or_insert_with(|| Vec::with_capacity(capacity))
}

/// How many threads write an export's files when the caller does not say: one per core, at most
/// four (a chunk rarely has more than a few files' worth of rows).
pub fn default_writers() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get().min(4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_row(n: usize) -> EventRowRef<'static> {
        EventRowRef {
            uuid: uuid::Uuid::from_u128(n as u128),
            team_id: None,
            source: "capture",
            event: "e",
            distinct_id: "d",
            created_at: 0,
            timestamp: Some(0),
            properties: None,
            context: None,
            person_id: None,
            person_created_at: None,
            person_properties: None,
            groups: [None; 5],
            group_properties: None,
            api_key: None,
            extra: None,
        }
    }

    fn days(sizes: &[usize]) -> BTreeMap<i32, Vec<EventRowRef<'static>>> {
        sizes
            .iter()
            .enumerate()
            .map(|(day, &size)| (day as i32, (0..size).map(event_row).collect()))
            .collect()
    }

    fn sizes(jobs: &[Job<'_, '_>]) -> Vec<(i32, usize)> {
        jobs.iter().map(|job| (job.day, job.len())).collect()
    }

    #[test]
    fn a_large_day_is_cut_into_one_file_per_writer_and_small_ones_are_left_whole() {
        let none: BTreeMap<i32, Vec<PersonSnapshotRef<'_>>> = BTreeMap::new();
        let events = days(&[40_000, 3_000]);
        assert_eq!(sizes(&jobs(&events, &none, 1)), [(0, 40_000), (1, 3_000)]);
        // 43,000 rows for two writers: pieces of at most 21,500.
        assert_eq!(sizes(&jobs(&events, &none, 2)), [(0, 20_000), (0, 20_000), (1, 3_000)]);
        // A small chunk stays one file per table and day, whatever the writers.
        assert_eq!(sizes(&jobs(&days(&[9_000]), &none, 4)), [(0, 9_000)]);
        assert!(jobs(&BTreeMap::new(), &none, 2).is_empty());
    }

    #[test]
    fn when_one_file_fails_none_of_the_others_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-directory");
        std::fs::write(&blocker, b"").unwrap();
        let job = |day| Job {
            table: Table::Events,
            day,
            rows: Rows::Events(&[]),
        };
        let jobs = [job(0), job(1), job(2)];
        for writers in [1, 2, 3] {
            let err = write_all(&jobs, writers, |job| match job.day {
                1 => blocker.join("file.parquet"),
                day => dir.path().join(format!("{writers}-{day}.parquet")),
            })
            .unwrap_err();
            assert!(err.to_string().contains("cannot write"), "{err}");
            let left: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(left, [std::ffi::OsString::from("not-a-directory")]);
        }
        let files = write_all(&jobs, 2, |job| dir.path().join(format!("ok-{}.parquet", job.day))).unwrap();
        let days: Vec<i32> = files.iter().map(|file| file.day).collect();
        assert_eq!(days, [0, 1, 2]);
        assert!(files.iter().all(|file| file.path.exists() && file.rows == 0));
    }

    #[test]
    fn a_panic_while_writing_a_file_is_an_error_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("timestamp_day=2026-12-01").join("file.parquet");
        let rows = std::iter::once_with(|| -> Result<arrow_array::RecordBatch> { panic!("a bug some rows reach") });
        let err = columns::write_parquet(&path, Table::Events, rows).unwrap_err();
        assert!(err.to_string().contains("internal error"), "{err}");
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 0);
    }
}
