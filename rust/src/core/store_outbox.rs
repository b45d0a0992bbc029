//! The outbox as the sinks read it: entries in position order, each sink's cursor, and the
//! rows every sink has, freed a slice at a time.

use std::ops::Bound;

use heed::RoTxn;

#[cfg(test)]
use super::OutboxChunk;
use super::{read_u64, write_u64, OutboxState, Store, META_BYTES, META_NEXT_SEQ, META_ROWS};
use crate::core::error::Result;
#[cfg(test)]
use crate::core::row::OutboxRecord;
use crate::core::row::{
    last_position, person_held_at, rows_in_entry, unresolved, EventRowRef, OutboxRecordRef, PersonRef,
    PersonSnapshotRef,
};

impl Store {
    /// When the oldest row after `after` reached the store (microseconds since the epoch), or
    /// `None` when there is no such row: how far behind a sink at `after` is.
    pub fn pending_since(&self, after: u64) -> Result<Option<i64>> {
        let txn = self.env.read_txn()?;
        let range = (Bound::Excluded(after), Bound::Unbounded);
        let Some(entry) = self.outbox.range(&txn, &range)?.next() else {
            return Ok(None);
        };
        let (_, value) = entry?;
        let value = self.read_entry(&txn, value)?;
        Ok(Some(match OutboxRecordRef::decode(value.bytes())? {
            OutboxRecordRef::Event(row)
            | OutboxRecordRef::PersonEvent(row, _)
            | OutboxRecordRef::PersonEventShown(row, _, _)
            | OutboxRecordRef::PersonEventAt(_, row, _)
            | OutboxRecordRef::PersonEventShownAt(_, row, _, _) => row.created_at,
            OutboxRecordRef::Person(snapshot) => snapshot.updated_at,
        }))
    }

    pub fn outbox_state(&self) -> Result<OutboxState> {
        let txn = self.env.read_txn()?;
        Ok(OutboxState {
            next_seq: read_u64(self.meta, &txn, META_NEXT_SEQ)?.max(1),
            rows: read_u64(self.meta, &txn, META_ROWS)?,
            bytes: read_u64(self.meta, &txn, META_BYTES)?,
        })
    }

    /// Up to `max_rows` entries (and about `max_bytes`) at positions above `after`, owned, each
    /// with its first position, its person in it.
    #[cfg(test)]
    pub fn read_outbox(&self, after: u64, max_rows: usize, max_bytes: u64) -> Result<OutboxChunk> {
        self.with_outbox(after, max_rows, max_bytes, |read| {
            let mut chunk = OutboxChunk {
                last_seq: after,
                bytes: read.entries.iter().map(|(_, bytes)| bytes.len() as u64).sum(),
                ..OutboxChunk::default()
            };
            read.for_each_row(|seq, event, person| {
                let rows = u64::from(event.is_some()) + u64::from(person.is_some());
                let record = match (
                    event.map(|row| owned::event_row(&row)),
                    person.as_ref().map(owned::snapshot),
                ) {
                    (Some(event), Some(person)) => OutboxRecord::PersonEvent(event, person),
                    (Some(event), None) => OutboxRecord::Event(event),
                    (None, Some(person)) => OutboxRecord::Person(person),
                    (None, None) => unreachable!("an entry holds a row"),
                };
                chunk.records.push((seq + 1 - rows, record));
                chunk.last_seq = seq;
                Ok(())
            })?;
            Ok(chunk)
        })
    }

    /// Run `f` over the outbox entries after `after` (up to about `max_rows` rows and
    /// `max_bytes`), inside one read transaction, so `f` can borrow the entries without copying
    /// them (compressed ones are decompressed first). Each entry comes with its position: the
    /// last of the positions its rows take. With compression on, the entries tell how well the
    /// current dictionary does, and while the store wants a new one they are kept as its
    /// samples; it is made once there are enough.
    ///
    /// The entries are on disk before `f` sees them: the latest commit's meta page may not be
    /// (it waits for the next flush), and a sink must not get rows a power loss could take back
    /// from the store, which would store them again when their requests were retried.
    pub fn with_outbox<R>(
        &self,
        after: u64,
        max_rows: usize,
        max_bytes: u64,
        f: impl FnOnce(&OutboxRead<'_>) -> Result<R>,
    ) -> Result<R> {
        let txn = self.env.read_txn()?;
        let range = (Bound::Excluded(after), Bound::Unbounded);
        let mut read = Vec::new();
        // Entries before `after` that entries read take their person from: a read that begins
        // inside a commit.
        let mut before = Vec::new();
        let (mut rows, mut bytes) = (0u64, 0u64);
        let mut judged = Vec::new();
        for entry in self.outbox.range(&txn, &range)? {
            let (seq, value) = entry?;
            let entry = self.read_entry(&txn, value)?;
            rows += rows_in_entry(value);
            bytes += entry.bytes().len() as u64;
            if self.compress_outbox {
                judged.push((seq, value.len(), entry.bytes().len()));
            }
            if let Some(at) = person_held_at(entry.bytes()).filter(|at| *at <= after) {
                // Kept in order of position: a read that begins inside a large commit may find
                // thousands of persons held before it.
                if let Err(index) = before.binary_search_by_key(&at, |(key, _)| *key) {
                    if let Some(value) = self.outbox.get(&txn, &at)? {
                        before.insert(index, (at, self.read_entry(&txn, value)?));
                    }
                }
            }
            read.push((last_position(seq, value), entry));
            if rows >= max_rows as u64 || bytes >= max_bytes {
                break;
            }
        }
        let entries: Vec<(u64, &[u8])> = read.iter().map(|(seq, entry)| (*seq, entry.bytes())).collect();
        let outbox = OutboxRead {
            entries,
            before: before.iter().map(|(key, entry)| (*key, entry.bytes())).collect(),
        };
        if outbox.entries.is_empty() {
            return f(&outbox);
        }
        // Every commit this transaction sees had written its meta page before it began.
        self.sync()?;
        let sampling = self.wants_samples(&txn)?;
        self.judge_dictionary(&txn, judged.into_iter())?;
        let result = f(&outbox);
        if sampling {
            self.keep_samples(outbox.entries.iter().copied());
        }
        drop(outbox);
        drop(before);
        drop(read);
        drop(txn);
        if sampling {
            // A dictionary not made now is made from later samples: the entries are delivered
            // all the same, so nothing here may fail the sink's read.
            let _ = self.install_dictionary_when_ready();
        }
        result
    }

    /// Forget rows up to and including position `upto` (every sink has them), at most about
    /// `limit` entries per call: a write transaction holds off ingestion's commits, so it is
    /// kept short. Returns how many rows it forgot.
    ///
    /// An entry that takes its person from an earlier one must not outlive it while a sink may
    /// still read it: the span of such entries around `upto` stays whole, and a trim that stops
    /// inside a span (its sinks all have it) goes on to its end, so that the first entry left
    /// never points to one that is gone.
    pub fn trim_outbox(&self, upto: u64, limit: usize) -> Result<u64> {
        let mut txn = self.env.write_txn()?;
        let upto = match self.held_span_around(&txn, upto)? {
            Some((first, _)) => first - 1,
            None => upto,
        };
        let (mut count, mut rows, mut size, mut last) = (0usize, 0u64, 0u64, None);
        for entry in self.outbox.range(&txn, &(Bound::Unbounded, Bound::Included(upto)))? {
            let (seq, value) = entry?;
            count += 1;
            rows += rows_in_entry(value);
            size += value.len() as u64;
            let position = last_position(seq, value);
            last = Some((seq, position));
            if count >= limit && self.held_span_around(&txn, position)?.is_none() {
                break;
            }
        }
        let Some((last, position)) = last else {
            return Ok(0);
        };
        self.outbox
            .delete_range(&mut txn, &(Bound::Unbounded, Bound::Included(last)))?;
        self.held_spans
            .delete_range(&mut txn, &(Bound::Unbounded, Bound::Included(position)))?;
        let first = self.first_position_in(&txn)?;
        self.forget_dictionaries(&mut txn, first)?;
        let waiting = read_u64(self.meta, &txn, META_ROWS)?.saturating_sub(rows);
        let bytes = read_u64(self.meta, &txn, META_BYTES)?.saturating_sub(size);
        write_u64(self.meta, &mut txn, META_ROWS, waiting)?;
        write_u64(self.meta, &mut txn, META_BYTES, bytes)?;
        // Its meta page is not flushed on its own: a trim a crash undoes is simply done again,
        // and the next flush of the file takes it to disk.
        txn.commit()?;
        Ok(rows)
    }

    /// The span of entries that take their person from earlier ones (`held_spans`) that goes
    /// on past `position`, when `position` is inside one: its first and last positions.
    fn held_span_around(&self, txn: &RoTxn, position: u64) -> Result<Option<(u64, u64)>> {
        let Some(span) = self.held_spans.rev_range(txn, &(..=position))?.next() else {
            return Ok(None);
        };
        let (first, end) = span?;
        Ok((end > position).then_some((first, end)))
    }

    pub fn cursor(&self, sink: &str) -> Result<Option<u64>> {
        let txn = self.env.read_txn()?;
        let key = format!("cursor.{sink}");
        self.meta
            .get(&txn, &key)?
            .is_some()
            .then(|| read_u64(self.meta, &txn, &key))
            .transpose()
    }

    pub fn set_cursor(&self, sink: &str, seq: u64) -> Result<()> {
        let mut txn = self.env.write_txn()?;
        write_u64(self.meta, &mut txn, &format!("cursor.{sink}"), seq)?;
        self.commit_synced(txn)?;
        Ok(())
    }

    /// The position of the first row still in the outbox, or the next row's when it is empty:
    /// a sink whose cursor is further back than this will never get the rows in between.
    pub fn first_position(&self) -> Result<u64> {
        let txn = self.env.read_txn()?;
        self.first_position_in(&txn)
    }

    /// Number the next rows after position `past`, if the outbox has not gone that far: a store
    /// restored from a backup would otherwise give new rows positions a sink already recorded
    /// as delivered (by this store, before the backup was restored), and that sink would skip
    /// them. Returns whether it moved.
    pub fn advance_outbox(&self, past: u64) -> Result<bool> {
        let mut txn = self.env.write_txn()?;
        if read_u64(self.meta, &txn, META_NEXT_SEQ)?.max(1) > past {
            return Ok(false);
        }
        write_u64(self.meta, &mut txn, META_NEXT_SEQ, past + 1)?;
        self.commit_synced(txn)?;
        Ok(true)
    }
}

/// The outbox entries a sink reads (`Store::with_outbox`), in order, each with the last of its
/// positions.
pub struct OutboxRead<'r> {
    pub entries: Vec<(u64, &'r [u8])>,
    /// Entries before the read, in order of position, that entries of the read take their
    /// person from.
    before: Vec<(u64, &'r [u8])>,
}

impl<'r> OutboxRead<'r> {
    /// How many positions the entries take.
    pub fn positions(&self) -> u64 {
        self.entries.iter().map(|(_, bytes)| rows_in_entry(bytes)).sum()
    }

    /// Call `f` with each entry's last position and the rows it holds, in order
    /// (`OutboxRecordRef::rows`), each entry's person found wherever it is held.
    pub fn for_each_row(
        &self,
        mut f: impl FnMut(u64, Option<EventRowRef<'r>>, Option<PersonSnapshotRef<'r>>) -> Result<()>,
    ) -> Result<()> {
        // The persons the entries read so far hold, by position, in order. An entry that points
        // to an earlier one finds it here: one person's events of one commit come from several
        // requests, so other people's entries usually sit in between.
        let mut held: Vec<(u64, PersonRef<'r>)> = Vec::new();
        for (seq, bytes) in &self.entries {
            let record = OutboxRecordRef::decode(bytes)?;
            if let Some(person) = record.person() {
                held.push((seq + 1 - rows_in_entry(bytes), person));
            }
            let (event, person) = record.rows(|at| {
                let index = held.partition_point(|(position, _)| *position < at);
                match held.get(index) {
                    Some((position, person)) if *position == at => Ok(*person),
                    _ => self.person_before(at),
                }
            })?;
            f(*seq, event, person)?;
        }
        Ok(())
    }

    /// The person the entry at position `at`, before the read, holds.
    fn person_before(&self, at: u64) -> Result<PersonRef<'r>> {
        let bytes = self
            .before
            .binary_search_by_key(&at, |(key, _)| *key)
            .ok()
            .map(|index| self.before[index].1);
        match bytes.map(OutboxRecordRef::decode).transpose()? {
            Some(record) => record.person().map_or_else(|| unresolved(at), Ok),
            None => unresolved(at),
        }
    }
}

/// Rows read borrowed, copied.
#[cfg(test)]
mod owned {
    use crate::core::person::Person;
    use crate::core::row::{EventRow, EventRowRef, PersonSnapshot, PersonSnapshotRef};

    pub fn event_row(row: &EventRowRef<'_>) -> EventRow {
        EventRow {
            uuid: row.uuid,
            team_id: row.team_id,
            source: row.source.to_owned(),
            event: row.event.to_owned(),
            distinct_id: row.distinct_id.to_owned(),
            created_at: row.created_at,
            timestamp: row.timestamp,
            properties: row.properties.map(str::to_owned),
            context: row.context.map(str::to_owned),
            person_id: row.person_id.map(str::to_owned),
            person_created_at: row.person_created_at,
            person_properties: row.person_properties.clone().map(std::borrow::Cow::into_owned),
            groups: row.groups.map(|group| group.map(str::to_owned)),
            group_properties: row.group_properties.map(str::to_owned),
            api_key: row.api_key.map(str::to_owned),
            extra: row.extra.map(str::to_owned),
        }
    }

    pub fn snapshot(row: &PersonSnapshotRef<'_>) -> PersonSnapshot {
        let person = &row.person;
        PersonSnapshot {
            uuid: row.uuid,
            team_id: row.team_id,
            operation: row.operation.to_owned(),
            person: Person {
                id: person.id,
                uuid: person.uuid,
                created_at: person.created_at,
                version: person.version,
                is_identified: person.is_identified,
                properties: person.properties(),
                distinct_ids: person.distinct_ids.iter().map(|id| (*id).to_owned()).collect(),
            },
            canonical_distinct_id: row.canonical_distinct_id.to_owned(),
            updated_at: row.updated_at,
            api_key: row.api_key.map(str::to_owned),
            source_event_uuid: row.source_event_uuid,
        }
    }
}
