//! The durable store: one LMDB environment under `<data_dir>/store` holding the outbox of rows
//! not yet delivered to every sink, the uuids seen recently (dedupe), project ids and sink
//! cursors. One write transaction per group commit; it is synced before `commit` returns, so
//! whatever `commit` accepted survives a crash.
//!
//! The environment is opened with `MDB_NOMETASYNC`: a commit flushes its pages, then writes the
//! meta page that makes it current without a second flush of its own. That meta page reaches the
//! disk with the next flush of the file, a later commit's or `sync`'s. So every write here ends
//! with `sync` except `commit_unsynced` (the commit thread answers a commit's requests once a
//! later commit or a `sync` has returned: a stream of commits pays one flush each, not two) and
//! the forgetting of delivered rows and expired uuids, which a crash may undo and the next
//! round does again.

use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use heed::byteorder::BigEndian;
use heed::types::{Bytes, Str, Unit, U32, U64};
use heed::{Database, Env, EnvFlags, EnvOpenOptions, RoTxn, RwTxn};
use uuid::Uuid;

use super::cookieless_state::CookielessDb;
use super::dictionary_training::{DictionaryPolicy, DictionaryTrainer};
use super::error::{CoreError, Result};
use super::groups::MAX_GROUP_TYPES;
use super::outbox_dictionary::{EntryCompressor, EntryExpander};
use super::persons::PersonDbs;
use super::row::OutboxRecord;

#[path = "store_commit.rs"]
mod commit;
#[path = "store_dictionary.rs"]
mod dictionary;
#[path = "store_lookups.rs"]
mod lookups;
#[path = "store_outbox.rs"]
mod outbox;

pub use commit::{CommitOptions, CommitOutcome};
pub use lookups::{Continuity, ContinuityIds};

const SECONDS_PER_DAY: i64 = 86_400;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Virtual size of the memory map; the file only grows as data is written.
    pub map_size: usize,
    pub max_readers: u32,
    /// Group types whose index is fixed (`POSTHOG_GROUP_TYPE_0..4`); the others are numbered
    /// in the free slots on first sight.
    pub group_types: [Option<String>; MAX_GROUP_TYPES],
    /// Whether commits compress outbox entries (entries compressed before are read either way).
    pub compress_outbox: bool,
    /// When the outbox's compression dictionaries are made.
    pub dictionary: DictionaryPolicy,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            map_size: 256 << 30,
            max_readers: 1024,
            group_types: Default::default(),
            compress_outbox: false,
            dictionary: DictionaryPolicy::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxState {
    /// Sequence number the next row will get; rows so far are `1..next_seq`.
    pub next_seq: u64,
    pub rows: u64,
    pub bytes: u64,
}

/// How many persons, distinct ids and groups the store holds, over every project.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub persons: u64,
    pub distinct_ids: u64,
    pub groups: u64,
}

/// Rows read from the outbox, in order.
#[derive(Debug, Default)]
pub struct OutboxChunk {
    pub records: Vec<(u64, OutboxRecord)>,
    pub last_seq: u64,
    pub bytes: u64,
}

pub struct Store {
    env: Env,
    meta: Database<Str, Bytes>,
    projects: Database<Str, U32<BigEndian>>,
    /// project(4) ‖ uuid(16) → day the uuid was first stored
    seen: Database<Bytes, U32<BigEndian>>,
    /// day(4) ‖ outbox position(8) → project(4) ‖ uuid(16): each day's uuids in the order they
    /// came, so old entries can be expired a day at a time and a new one is always appended
    /// (keyed by the uuid, posthog-python's random uuid4s would each land on a page of their own
    /// and make every commit rewrite a page per event). Stores written before format 4 keep
    /// day(4) ‖ project(4) ‖ uuid(16) → nothing, read as well.
    seen_by_day: Database<Bytes, Bytes>,
    outbox: Database<U64<BigEndian>, Bytes>,
    /// first position → last position of the entries of one commit where some take their
    /// person from an earlier one (`OutboxRecordRef::PersonEventAt`): the outbox is trimmed
    /// past such a span only as a whole, so an entry never outlives the one it points to.
    held_spans: Database<U64<BigEndian>, U64<BigEndian>>,
    persons: PersonDbs,
    cookieless: CookielessDb,
    group_types: [Option<String>; MAX_GROUP_TYPES],
    /// The person tables again, only to count their entries for monitoring.
    counted: [Database<Bytes, Unit>; 3],
    /// The commits' compressor, for the dictionary it was made with (commits follow the meta
    /// table's latest).
    compressor: Mutex<Option<EntryCompressor>>,
    /// The sinks' decompressors.
    expander: Mutex<EntryExpander>,
    /// Entries the sinks have read, gathered while a new dictionary is due, and how well the
    /// current one compresses them.
    dictionary_trainer: Mutex<DictionaryTrainer>,
    dictionary_policy: DictionaryPolicy,
    compress_outbox: bool,
    /// Nanoseconds the last `commit` spent writing and syncing its transaction.
    last_sync_nanos: AtomicU64,
    /// Whether the store records `STORE_FORMAT`; until it does, each commit records it.
    pub(super) format_stamped: AtomicBool,
    /// Called by `commit_unsynced` as it is about to commit: an error stands for a commit that
    /// failed writing or flushing the file.
    #[cfg(test)]
    pub(crate) before_commit: std::sync::Mutex<Option<CommitHook>>,
    /// How many times `sync` has flushed the file.
    #[cfg(test)]
    pub(crate) syncs: AtomicU64,
    /// Chosen when the store is created. The lake records it beside each outbox position it
    /// commits: a position is this store's only when the ids agree, so a store replaced (or
    /// restored) under an existing lake never takes another store's position for its own.
    id: Uuid,
}

#[cfg(test)]
pub(crate) type CommitHook = Box<dyn FnMut() -> Result<()> + Send>;

const META_NEXT_SEQ: &str = "outbox.next_seq";
const META_ROWS: &str = "outbox.rows";
const META_BYTES: &str = "outbox.bytes";
const META_NEXT_PROJECT: &str = "projects.next";
const META_FORMAT: &str = "store.format";
const META_ID: &str = "store.id";
/// How this code lays out persons and outbox rows. 2: persons in `person_record`'s layout, which
/// person snapshot rows carry too (1 was postcard throughout, and recorded no format). 3: an
/// outbox entry may also hold the values an event's row shows over its person
/// (`OutboxRecord::PersonEventShown`), which a reader of format 2 cannot decode. 4: the seen
/// uuids' day index keyed by outbox position (`seen_by_day`), which a hogflare of format 3 would
/// never expire. 5: outbox entries compressed with the store's dictionaries
/// (`outbox_dictionary`). 6: an entry may take its person from an earlier entry of its commit
/// (`OutboxRecordRef::PersonEventAt`).
const STORE_FORMAT: u64 = 6;
/// Formats 2 to 5 are subsets of format 6: such a store is read as it is and stamped 6 by its
/// first commit (not when it is opened: `hogflare doctor` must not change it), so that an older
/// hogflare refuses it then (with the message below) rather than misread it.
const UPGRADED_FORMATS: [u64; 4] = [2, 3, 4, 5];

fn read_u64(db: Database<Str, Bytes>, txn: &RoTxn, key: &str) -> Result<u64> {
    Ok(db
        .get(txn, key)?
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map_or(0, u64::from_be_bytes))
}

fn write_u64(db: Database<Str, Bytes>, txn: &mut RwTxn, key: &str, value: u64) -> Result<()> {
    Ok(db.put(txn, key, &value.to_be_bytes())?)
}

/// A mutex's value, also after a thread panicked holding it: what these guard (a compressor, a
/// cache, samples) stays usable whatever the panic interrupted.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn day_of(now: DateTime<Utc>) -> u32 {
    (now.timestamp().div_euclid(SECONDS_PER_DAY)).max(0) as u32
}

impl Store {
    pub fn open(path: &Path, config: &StoreConfig) -> Result<Self> {
        std::fs::create_dir_all(path)
            .map_err(|err| CoreError::Store(format!("cannot create {}: {err}", path.display())))?;
        let mut options = EnvOpenOptions::new();
        options
            // LMDB wants whole pages; 64 KiB is a multiple of every page size Linux uses.
            .map_size(config.map_size.div_ceil(64 << 10) * (64 << 10))
            .max_dbs(24)
            .max_readers(config.max_readers);
        #[allow(unsafe_code)]
        // SAFETY: the environment is only ever opened through this function, never on a network
        // filesystem, and its files are not modified by anything but LMDB; LMDB's lock file
        // coordinates the server's worker processes and the shipper.
        let env = unsafe {
            options.flags(EnvFlags::NO_READ_AHEAD | EnvFlags::NO_META_SYNC);
            options.open(path)?
        };
        let mut wtxn = env.write_txn()?;
        let store = Self {
            meta: env.create_database(&mut wtxn, Some("meta"))?,
            projects: env.create_database(&mut wtxn, Some("projects"))?,
            seen: env.create_database(&mut wtxn, Some("seen"))?,
            seen_by_day: env.create_database(&mut wtxn, Some("seen_by_day"))?,
            outbox: env.create_database(&mut wtxn, Some("outbox"))?,
            held_spans: env.create_database(&mut wtxn, Some("outbox_held_spans"))?,
            persons: PersonDbs::create(&env, &mut wtxn)?,
            cookieless: CookielessDb::create(&env, &mut wtxn)?,
            group_types: config.group_types.clone(),
            counted: [
                env.create_database(&mut wtxn, Some("persons"))?,
                env.create_database(&mut wtxn, Some("distinct_ids"))?,
                env.create_database(&mut wtxn, Some("groups"))?,
            ],
            compressor: Mutex::new(None),
            expander: Mutex::new(EntryExpander::default()),
            dictionary_trainer: Mutex::new(DictionaryTrainer::default()),
            dictionary_policy: config.dictionary,
            compress_outbox: config.compress_outbox,
            last_sync_nanos: AtomicU64::new(0),
            format_stamped: AtomicBool::new(true),
            #[cfg(test)]
            before_commit: std::sync::Mutex::new(None),
            #[cfg(test)]
            syncs: AtomicU64::new(0),
            env: env.clone(),
            id: Uuid::nil(),
        };
        let stamped = store.check_format(&mut wtxn, path)?;
        store.format_stamped.store(stamped, Ordering::Relaxed);
        let id = if let Some(Ok(id)) = store.meta.get(&wtxn, META_ID)?.map(Uuid::from_slice) {
            id
        } else {
            let id = Uuid::new_v4();
            store.meta.put(&mut wtxn, META_ID, id.as_bytes())?;
            id
        };
        store.commit_synced(wtxn)?;
        Ok(Self { id, ..store })
    }

    /// Flush everything committed so far to disk: every commit made before it, by any process,
    /// is durable once it returns (see the module's documentation).
    pub fn sync(&self) -> Result<()> {
        #[cfg(test)]
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(self.env.force_sync()?)
    }

    /// Commit `txn` and make it durable before returning.
    fn commit_synced(&self, txn: RwTxn<'_>) -> Result<()> {
        txn.commit()?;
        self.sync()
    }

    /// Stamp a new store with the format this code writes; refuse one written in another, whose
    /// persons and rows it would misread. Whether the store records this code's format.
    fn check_format(&self, txn: &mut RwTxn, path: &Path) -> Result<bool> {
        let format = match self.meta.get(txn, META_FORMAT)? {
            Some(_) => read_u64(self.meta, txn, META_FORMAT)?,
            // Stores written before the format was recorded hold their metadata without it.
            None if !self.meta.is_empty(txn)? => 1,
            None => return write_u64(self.meta, txn, META_FORMAT, STORE_FORMAT).map(|()| true),
        };
        if format == STORE_FORMAT || UPGRADED_FORMATS.contains(&format) {
            return Ok(format == STORE_FORMAT);
        }
        Err(CoreError::Store(format!(
            "the store in {} has format {format}, and this hogflare reads format {STORE_FORMAT} only: \
             let the hogflare that wrote it deliver its outbox, then move the directory aside",
            path.display()
        )))
    }

    /// The store's id, chosen when it was created.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// How long the last `commit` took to write its pages and sync them to disk.
    pub fn last_sync(&self) -> Duration {
        Duration::from_nanos(self.last_sync_nanos.load(Ordering::Relaxed))
    }

    /// Entry counts from LMDB's own statistics: no table is scanned.
    pub fn counts(&self) -> Result<StoreCounts> {
        let txn = self.env.read_txn()?;
        let [persons, distinct_ids, groups] = self.counted;
        Ok(StoreCounts {
            persons: persons.len(&txn)?,
            distinct_ids: distinct_ids.len(&txn)?,
            groups: groups.len(&txn)?,
        })
    }

    /// The store's write lock, held until the transaction is dropped: what another process's
    /// commit looks like to this one.
    #[cfg(test)]
    pub fn hold_write_lock(&self) -> Result<heed::RwTxn<'_>> {
        Ok(self.env.write_txn()?)
    }

    /// Forget uuids first seen more than `window_days` ago, at most `limit` per call so the
    /// write transaction stays short. Returns how many were forgotten.
    pub fn expire_seen(&self, now: DateTime<Utc>, window_days: u32, limit: usize) -> Result<usize> {
        let cutoff = day_of(now).saturating_sub(window_days);
        let mut txn = self.env.write_txn()?;
        let upper = cutoff.to_be_bytes();
        let range = (Bound::Unbounded, Bound::Excluded(&upper[..]));
        let mut keys: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for entry in self.seen_by_day.range(&txn, &range)? {
            let (key, seen) = entry?;
            // Before format 4 the uuid's `seen` key was the day index's key after the day.
            let seen = if seen.is_empty() { &key[4..] } else { seen };
            keys.push((key.to_vec(), seen.to_vec()));
            if keys.len() >= limit {
                break;
            }
        }
        for (key, seen) in &keys {
            // The uuid may have been stored again since (after its window): keep that sighting.
            if self.seen.get(&txn, seen)?.is_some_and(|day| day < cutoff) {
                self.seen.delete(&mut txn, seen)?;
            }
            self.seen_by_day.delete(&mut txn, key)?;
        }
        // Like a trim of the outbox, an expiry a crash undoes is done again: its meta page waits
        // for the next flush of the file.
        txn.commit()?;
        Ok(keys.len())
    }

    /// Forget cookieless mode's salts (and the identifies and sessions made with them) of days
    /// no place on earth is in any more, also when no cookieless event arrives to do it, and make
    /// the salts of the days in use that no event has made yet; how many entries changed.
    /// Nothing is written when none did.
    pub fn maintain_cookieless(&self, now: DateTime<Utc>) -> Result<usize> {
        let mut txn = self.env.write_txn()?;
        let changed = self.cookieless.forget_past_days(&mut txn, now)? + self.cookieless.prepare_days(&mut txn, now)?;
        if changed > 0 {
            self.commit_synced(txn)?;
        }
        Ok(changed)
    }

    /// Whether the store can be read: the environment is open and its metadata is readable.
    pub fn check(&self) -> Result<()> {
        let txn = self.env.read_txn()?;
        read_u64(self.meta, &txn, META_NEXT_SEQ)?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "store_dictionary_tests.rs"]
pub(crate) mod dictionary_tests;
