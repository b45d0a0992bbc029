//! The outbox as the sinks read it: entries in position order, each sink's cursor, and the
//! rows every sink has, freed a slice at a time.

use std::ops::Bound;

#[cfg(test)]
use super::OutboxChunk;
use super::{read_u64, write_u64, OutboxState, Store, META_BYTES, META_NEXT_SEQ, META_ROWS};
use crate::core::error::Result;
#[cfg(test)]
use crate::core::row::OutboxRecord;
use crate::core::row::{last_position, rows_in_entry, OutboxRecordRef};

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
            | OutboxRecordRef::PersonEventShown(row, _, _) => row.created_at,
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

    /// Up to `max_rows` entries (and about `max_bytes`) at positions above `after`.
    #[cfg(test)]
    pub fn read_outbox(&self, after: u64, max_rows: usize, max_bytes: u64) -> Result<OutboxChunk> {
        let txn = self.env.read_txn()?;
        let mut chunk = OutboxChunk {
            last_seq: after,
            ..OutboxChunk::default()
        };
        let range = (Bound::Excluded(after), Bound::Unbounded);
        for entry in self.outbox.range(&txn, &range)? {
            let (seq, value) = entry?;
            chunk
                .records
                .push((seq, OutboxRecord::decode(self.read_entry(&txn, value)?.bytes())?));
            chunk.last_seq = last_position(seq, value);
            chunk.bytes += value.len() as u64;
            if chunk.records.len() >= max_rows || chunk.bytes >= max_bytes {
                break;
            }
        }
        Ok(chunk)
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
        f: impl FnOnce(&[(u64, &[u8])]) -> Result<R>,
    ) -> Result<R> {
        let txn = self.env.read_txn()?;
        let range = (Bound::Excluded(after), Bound::Unbounded);
        let mut read = Vec::new();
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
            read.push((last_position(seq, value), entry));
            if rows >= max_rows as u64 || bytes >= max_bytes {
                break;
            }
        }
        if read.is_empty() {
            return f(&[]);
        }
        // Every commit this transaction sees had written its meta page before it began.
        self.sync()?;
        let sampling = self.wants_samples(&txn)?;
        self.judge_dictionary(&txn, judged.into_iter())?;
        let entries: Vec<(u64, &[u8])> = read.iter().map(|(seq, entry)| (*seq, entry.bytes())).collect();
        let result = f(&entries);
        if sampling {
            self.keep_samples(entries.iter().copied());
        }
        drop(entries);
        drop(read);
        drop(txn);
        if sampling {
            // A dictionary not made now is made from later samples: the entries are delivered
            // all the same, so nothing here may fail the sink's read.
            let _ = self.install_dictionary_when_ready();
        }
        result
    }

    /// Forget rows up to and including position `upto` (every sink has them), at most `limit`
    /// entries per call: a write transaction holds off ingestion's commits, so it is kept short.
    /// Returns how many rows it forgot.
    pub fn trim_outbox(&self, upto: u64, limit: usize) -> Result<u64> {
        let mut txn = self.env.write_txn()?;
        let (mut count, mut rows, mut size, mut last) = (0usize, 0u64, 0u64, 0u64);
        for entry in self.outbox.range(&txn, &(Bound::Unbounded, Bound::Included(upto)))? {
            let (seq, value) = entry?;
            count += 1;
            rows += rows_in_entry(value);
            size += value.len() as u64;
            last = seq;
            if count >= limit {
                break;
            }
        }
        if count == 0 {
            return Ok(0);
        }
        self.outbox
            .delete_range(&mut txn, &(Bound::Unbounded, Bound::Included(last)))?;
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
