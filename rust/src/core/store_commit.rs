//! One group commit: the events of many requests deduplicated, applied to persons and groups,
//! and appended to the outbox, all in a single write transaction, synced before `commit`
//! returns (or, for the commit thread, once a later commit has flushed it).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::{DateTime, Utc};
use heed::byteorder::BigEndian;
use heed::types::{Bytes, U64};
use heed::{Database, PutFlags, RwTxn};
use uuid::Uuid;

use super::{
    day_of, lock, read_u64, write_u64, Store, META_BYTES, META_FORMAT, META_NEXT_PROJECT, META_NEXT_SEQ, META_ROWS,
    STORE_FORMAT,
};
use crate::core::decode::DecodedRequest;
use crate::core::error::{CoreError, Result};
use crate::core::groups;
use crate::core::outbox_dictionary::EntryCompressor;
use crate::core::persons::{EventOfPerson, PersonWarning, PersonWork, SnapshotPerson};
use crate::core::properties;
use crate::core::row::{rows_in_entry, EventRow, OutboxRecord, PersonSnapshotOf};
use crate::core::timestamp;

#[derive(Debug, Clone, Copy)]
pub struct CommitOptions {
    pub dedupe_window_days: u32,
    /// Refuse new rows while more than this many bytes wait for delivery.
    pub max_outbox_bytes: u64,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    pub stored: u32,
    pub duplicates: u32,
    /// Person and group updates that could not be done as asked (the events still landed).
    pub warnings: BTreeMap<PersonWarning, u32>,
}

/// The `operation` of the person snapshot an event writes.
fn operation_of(event: &str) -> &'static str {
    match event {
        "$identify" => "identify",
        "$create_alias" => "alias",
        "$merge_dangerously" => "merge",
        "$snapshot" | "$snapshot_items" => "session_recording",
        _ => "capture",
    }
}

/// Appends entries to the outbox while a commit runs, compressed once the store has a
/// dictionary, counting what it holds.
struct OutboxWriter<'c> {
    db: Database<U64<BigEndian>, Bytes>,
    next_seq: u64,
    rows: u64,
    bytes: u64,
    compressor: Option<&'c mut EntryCompressor>,
    compressed: Vec<u8>,
    /// The positions from the first entry another entry takes its person from to the last
    /// entry that does: the outbox is trimmed within them only as a whole.
    held: Option<(u64, u64)>,
}

impl OutboxWriter<'_> {
    fn append(&mut self, txn: &mut RwTxn, encoded: &[u8]) -> Result<()> {
        let compressed = match self.compressor.as_deref_mut() {
            Some(compressor) => compressor.compress(encoded, &mut self.compressed)?,
            None => false,
        };
        let stored = if compressed { &self.compressed[..] } else { encoded };
        self.db.put_with_flags(txn, PutFlags::APPEND, &self.next_seq, stored)?;
        // An entry takes one position per row it holds, so that positions count rows.
        self.next_seq += rows_in_entry(stored);
        self.rows += rows_in_entry(stored);
        self.bytes += stored.len() as u64;
        Ok(())
    }

    /// The entry about to be appended at `at` takes its person from the one at `held_at`.
    fn points_back(&mut self, held_at: u64, at: u64) {
        let first = self.held.map_or(held_at, |(first, _)| first.min(held_at));
        self.held = Some((first, at));
    }
}

/// What the person snapshot rows an event makes share.
struct SnapshotOf<'a> {
    team_id: Option<i64>,
    token: &'a str,
    updated_at: i64,
    /// The event's uuid.
    source: Uuid,
}

impl<'a> SnapshotOf<'a> {
    fn row<'c>(&self, operation: &'c str, person: &'c [u8], canonical: &'c str) -> PersonSnapshotOf<'c>
    where
        'a: 'c,
    {
        PersonSnapshotOf {
            uuid: Uuid::new_v4(),
            team_id: self.team_id,
            operation,
            person,
            canonical_distinct_id: canonical,
            updated_at: self.updated_at,
            api_key: Some(self.token),
            source_event_uuid: self.source,
        }
    }
}

fn seen_key(project: u32, uuid: &Uuid) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..4].copy_from_slice(&project.to_be_bytes());
    key[4..].copy_from_slice(uuid.as_bytes());
    key
}

impl Store {
    fn project_id(&self, txn: &mut RwTxn, cache: &mut HashMap<String, u32>, token: &str) -> Result<u32> {
        if let Some(id) = cache.get(token) {
            return Ok(*id);
        }
        let id = if let Some(id) = self.projects.get(txn, token)? {
            id
        } else {
            let id = read_u64(self.meta, txn, META_NEXT_PROJECT)?.max(1);
            self.projects.put(txn, token, &(id as u32))?;
            write_u64(self.meta, txn, META_NEXT_PROJECT, id + 1)?;
            id as u32
        };
        cache.insert(token.to_owned(), id);
        Ok(id)
    }

    /// Store the events of many requests in one transaction and sync it to disk, with the person
    /// and group changes they make and a person snapshot for each event that has a person.
    pub fn commit(&self, batches: Vec<DecodedRequest>, options: CommitOptions) -> Result<Vec<CommitOutcome>> {
        self.commit_gathered(|| batches, options)
    }

    /// `commit`, with the batches gathered once the store's write lock is held: requests that
    /// arrive while another process commits join the next transaction rather than wait for it.
    /// `gather` is not called when the outbox is full or the transaction cannot begin.
    pub fn commit_gathered(
        &self,
        gather: impl FnOnce() -> Vec<DecodedRequest>,
        options: CommitOptions,
    ) -> Result<Vec<CommitOutcome>> {
        let outcomes = self.commit_unsynced(gather, options)?;
        self.sync()?;
        Ok(outcomes)
    }

    /// `commit_gathered`, but the transaction's meta page, which makes it the store's state, is
    /// left for the next flush of the file: the commit survives the process at once and the
    /// machine once a later commit (of any process), or `sync`, has returned. Every commit writes
    /// the outbox's counters, so every one that returns `Ok` has flushed the file, and with it
    /// the meta page of the commit before.
    pub fn commit_unsynced(
        &self,
        gather: impl FnOnce() -> Vec<DecodedRequest>,
        options: CommitOptions,
    ) -> Result<Vec<CommitOutcome>> {
        let mut txn = self.env.write_txn()?;
        let waiting = read_u64(self.meta, &txn, META_BYTES)?;
        if waiting > options.max_outbox_bytes {
            return Err(CoreError::OutboxFull { bytes: waiting });
        }
        let batches = gather();
        let mut compressor = lock(&self.compressor);
        if self.compress_outbox {
            self.follow_dictionary(&txn, &mut compressor)?;
        }
        let mut outbox = OutboxWriter {
            db: self.outbox,
            next_seq: read_u64(self.meta, &txn, META_NEXT_SEQ)?.max(1),
            rows: read_u64(self.meta, &txn, META_ROWS)?,
            bytes: waiting,
            compressor: compressor.as_mut(),
            compressed: Vec::with_capacity(4096),
            held: None,
        };
        let today = day_of(options.now);
        let updated_at = timestamp::to_micros(options.now);
        let mut projects = HashMap::new();
        let mut outcomes = Vec::with_capacity(batches.len());
        let mut persons = PersonWork::begin(self.persons, &txn, &self.group_types)?;
        // Each outbox entry is encoded here, then copied into the transaction.
        let mut entry = Vec::with_capacity(4096);
        // Past days' cookieless state goes in the first commit that has a cookieless event.
        let mut cookieless_day_checked = false;

        for batch in batches {
            let mut outcome = CommitOutcome::default();
            let project = self.project_id(&mut txn, &mut projects, &batch.token)?;
            // PostHog derives person uuids from the team id; without one the token names the project.
            let team_key = batch
                .team_id
                .map_or_else(|| batch.token.clone(), |team| team.to_string());
            let created_at = timestamp::to_micros(batch.created_at);
            for mut event in batch.events {
                let key = seen_key(project, &event.uuid);
                // A uuid first stored within the window is a duplicate; an older one waits for
                // the shipper's expiry and is stored again, as if it had been forgotten. A new
                // uuid, the usual case, is looked up and stored in one search of the tree.
                match self.seen.get_or_put(&mut txn, &key, &today)? {
                    Some(day) if day.saturating_add(options.dedupe_window_days) >= today => {
                        outcome.duplicates += 1;
                        continue;
                    }
                    Some(_) => self.seen.put(&mut txn, &key, &today)?,
                    None => {}
                }
                // The next outbox position: this event's rows take it or one after it (past a
                // merged person's snapshot), so no other uuid is indexed under it.
                let mut by_day = [0u8; 12];
                by_day[..4].copy_from_slice(&today.to_be_bytes());
                by_day[4..].copy_from_slice(&outbox.next_seq.to_be_bytes());
                self.seen_by_day.put(&mut txn, &by_day, &key)?;
                if event.cookieless.is_some() {
                    if !cookieless_day_checked {
                        self.cookieless.forget_past_days(&mut txn, options.now)?;
                        cookieless_day_checked = true;
                    }
                    self.cookieless.resolve(&mut txn, &batch.token, &mut event)?;
                }

                let of = EventOfPerson {
                    name: &event.event,
                    distinct_id: &event.distinct_id,
                    uuid: event.uuid,
                    timestamp: timestamp::to_micros(event.timestamp),
                };
                let applied = persons.apply(&mut txn, project, &team_key, &of, &event.person)?;
                let snapshot = SnapshotOf {
                    team_id: batch.team_id,
                    token: &batch.token,
                    updated_at,
                    source: event.uuid,
                };
                if let Some(gone) = &applied.merged_away {
                    let canonical = gone.distinct_ids.first().map_or("", String::as_str);
                    let mut encoded = Vec::new();
                    gone.encode(&mut encoded);
                    entry.clear();
                    snapshot.row("merged", &encoded, canonical).encode_into(&mut entry)?;
                    outbox.append(&mut txn, &entry)?;
                }

                let operation = operation_of(&event.event);
                let mut row = EventRow::from_event(event, batch.source, &batch.token, batch.team_id, created_at);
                if let Some(person) = applied.person {
                    let mut text = Uuid::encode_buffer();
                    row.person_id = Some(person.uuid.hyphenated().encode_lower(&mut text).to_owned());
                    row.person_created_at = Some(person.created_at);
                    row.person_properties = person.properties;
                }
                if applied.made_personless {
                    if let Some(personless) = row.properties.as_deref().and_then(properties::made_personless) {
                        row.properties = Some(personless);
                    }
                }
                let applied_groups = applied.groups;
                if let Some(properties) = row.properties.as_deref() {
                    let identified = applied_groups.identified;
                    if let Some(with_groups) = groups::property_entries(properties, &applied_groups.columns, identified)
                    {
                        row.properties = Some(with_groups);
                    }
                }
                row.groups = applied_groups.columns;
                row.group_properties = applied_groups.properties;
                entry.clear();
                // An event that resolved to a person goes with the person's snapshot, in one
                // entry that keeps the person's properties once, or points to the entry of this
                // commit that holds the person as it is now.
                let at = outbox.next_seq;
                match applied.person_id.and_then(|id| persons.snapshot_person(id, at)) {
                    Some(SnapshotPerson::Encoded(person)) => snapshot
                        .row(operation, person, &row.distinct_id)
                        .encode_with_event(&row, applied.shown.as_deref(), None, &mut entry)?,
                    Some(SnapshotPerson::HeldAt(held_at)) => {
                        outbox.points_back(held_at, at);
                        snapshot.row(operation, &[], &row.distinct_id).encode_with_event(
                            &row,
                            applied.shown.as_deref(),
                            Some(held_at),
                            &mut entry,
                        )?;
                    }
                    None => OutboxRecord::Event(row).encode_into(&mut entry)?,
                }
                outbox.append(&mut txn, &entry)?;
                outcome.stored += 1;
            }
            outcome.warnings = persons.take_warnings();
            outcomes.push(outcome);
        }
        persons.finish(&mut txn)?;
        if let Some((first, last)) = outbox.held {
            // The entry at `last` takes both its positions (an event and its person's snapshot).
            self.held_spans.put(&mut txn, &first, &(last + 1))?;
        }
        write_u64(self.meta, &mut txn, META_NEXT_SEQ, outbox.next_seq)?;
        write_u64(self.meta, &mut txn, META_ROWS, outbox.rows)?;
        write_u64(self.meta, &mut txn, META_BYTES, outbox.bytes)?;
        let stamping = !self.format_stamped.load(Ordering::Relaxed);
        if stamping {
            write_u64(self.meta, &mut txn, META_FORMAT, STORE_FORMAT)?;
        }
        #[cfg(test)]
        if let Some(hook) = self
            .before_commit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
        {
            hook()?;
        }
        let syncing = Instant::now();
        txn.commit()?;
        if stamping {
            self.format_stamped.store(true, Ordering::Relaxed);
        }
        let nanos = u64::try_from(syncing.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_sync_nanos.store(nanos, Ordering::Relaxed);
        Ok(outcomes)
    }
}
