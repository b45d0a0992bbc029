//! The outbox's compression dictionaries in the store: the one commits use, the ones entries
//! still need, and the making of the next from entries the sinks read
//! (`outbox_dictionary` and `dictionary_training` have the why).

use heed::{RoTxn, RwTxn};

use super::{lock, read_u64, write_u64, Store, META_NEXT_SEQ};
use crate::core::error::Result;
use crate::core::outbox_dictionary::{
    self, is_compressed, EntryCompressor, Installed, DICTIONARY_PREFIX, META_CURRENT, RECORD_HEADER,
};

/// An outbox entry as a sink reads it: the stored bytes, or what they decompress to.
pub(super) enum ReadEntry<'t> {
    Stored(&'t [u8]),
    Expanded(Vec<u8>),
}

impl ReadEntry<'_> {
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Self::Stored(bytes) => bytes,
            Self::Expanded(bytes) => bytes,
        }
    }
}

impl Store {
    /// The dictionary commits use now, if there is one.
    fn installed(&self, txn: &RoTxn) -> Result<Option<Installed>> {
        let id = read_u64(self.meta, txn, META_CURRENT)? as u32;
        if id == 0 {
            return Ok(None);
        }
        let record = self.meta.get(txn, &outbox_dictionary::meta_key(id))?;
        Ok(record.and_then(|record| Installed::read(id, record)))
    }

    pub(super) fn dictionary(&self, txn: &RoTxn, id: u32) -> Result<Option<Vec<u8>>> {
        let record = self.meta.get(txn, &outbox_dictionary::meta_key(id))?;
        Ok(record
            .and_then(|record| record.get(RECORD_HEADER..))
            .map(<[u8]>::to_vec))
    }

    /// The number of the dictionary commits compress with, if there is one yet.
    pub fn outbox_dictionary(&self) -> Result<Option<u32>> {
        let txn = self.env.read_txn()?;
        Ok(self.installed(&txn)?.map(|installed| installed.id))
    }

    /// Make `compressor` the one for the meta table's latest dictionary (in the commit's
    /// transaction, so every commit after an installation uses the new one).
    pub(super) fn follow_dictionary(&self, txn: &RoTxn, compressor: &mut Option<EntryCompressor>) -> Result<()> {
        let id = read_u64(self.meta, txn, META_CURRENT)? as u32;
        if id == 0 || compressor.as_ref().is_some_and(|current| current.id() == id) {
            return Ok(());
        }
        *compressor = match self.dictionary(txn, id)? {
            Some(bytes) => Some(EntryCompressor::new(id, &bytes)?),
            None => None,
        };
        Ok(())
    }

    /// An entry as stored, decompressed when it was compressed.
    pub(super) fn read_entry<'t>(&self, txn: &RoTxn, stored: &'t [u8]) -> Result<ReadEntry<'t>> {
        if !is_compressed(stored) {
            return Ok(ReadEntry::Stored(stored));
        }
        let expanded = lock(&self.expander).expand(stored, |id| self.dictionary(txn, id))?;
        Ok(ReadEntry::Expanded(expanded))
    }

    /// Whether the entries read in `txn` should be kept as samples for the next dictionary.
    pub(super) fn wants_samples(&self, txn: &RoTxn) -> Result<bool> {
        if !self.compress_outbox {
            return Ok(false);
        }
        let next_seq = read_u64(self.meta, txn, META_NEXT_SEQ)?;
        let installed = self.installed(txn)?;
        Ok(lock(&self.dictionary_trainer).wants_samples(&self.dictionary_policy, installed, next_seq))
    }

    /// Count the entries a sink read (position, stored bytes, read bytes) for the judgement of
    /// the current dictionary: those committed since it was installed, also the ones it did not
    /// make smaller (stored as they were).
    pub(super) fn judge_dictionary(&self, txn: &RoTxn, read: impl Iterator<Item = (u64, usize, usize)>) -> Result<()> {
        let installed = if self.compress_outbox {
            self.installed(txn)?
        } else {
            None
        };
        let Some(installed) = installed else {
            return Ok(());
        };
        let mut trainer = lock(&self.dictionary_trainer);
        for (position, stored, expanded) in read {
            if position >= installed.installed_at && trainer.first_judged(position) {
                trainer.observe(installed.id, stored, expanded);
            }
        }
        Ok(())
    }

    pub(super) fn keep_samples<'e>(&self, entries: impl Iterator<Item = (u64, &'e [u8])>) {
        let mut trainer = lock(&self.dictionary_trainer);
        for (position, entry) in entries {
            if trainer.first_sampled(position) && !trainer.push(&self.dictionary_policy, entry) {
                break;
            }
        }
    }

    /// Make the next dictionary once enough samples are in, and install it if it does better
    /// than the current one (`dictionary_training`); its number, if one was installed. Another
    /// process may have installed one meanwhile: then this one is dropped.
    pub fn install_dictionary_when_ready(&self) -> Result<Option<u32>> {
        let (installed, current, next_seq) = {
            let txn = self.env.read_txn()?;
            let installed = self.installed(&txn)?;
            let current = installed.map(|at| self.dictionary(&txn, at.id)).transpose()?.flatten();
            (installed, current, read_u64(self.meta, &txn, META_NEXT_SEQ)?)
        };
        let made = lock(&self.dictionary_trainer).train(&self.dictionary_policy, next_seq, current.as_deref());
        match made {
            Some(dictionary) => self.install_dictionary(&dictionary, installed.map(|at| at.id)),
            None => Ok(None),
        }
    }

    /// Make `dictionary` the one commits use from now on, if the one they use is still
    /// `replacing`; its number.
    pub fn install_dictionary(&self, dictionary: &[u8], replacing: Option<u32>) -> Result<Option<u32>> {
        // Every commit after this one loads it: it must load.
        EntryCompressor::new(0, dictionary)?;
        let mut txn = self.env.write_txn()?;
        let current = self.installed(&txn)?.map(|at| at.id);
        if current != replacing {
            return Ok(None);
        }
        let id = current.map_or(1, |id| id + 1);
        let mut record = read_u64(self.meta, &txn, META_NEXT_SEQ)?.max(1).to_be_bytes().to_vec();
        record.extend_from_slice(dictionary);
        self.meta.put(&mut txn, &outbox_dictionary::meta_key(id), &record)?;
        write_u64(self.meta, &mut txn, META_CURRENT, u64::from(id))?;
        self.commit_synced(txn)?;
        Ok(Some(id))
    }

    /// Forget the dictionaries no entry from `first_position` on can need: each one whose
    /// successor was installed at or before it.
    pub(super) fn forget_dictionaries(&self, txn: &mut RwTxn, first_position: u64) -> Result<()> {
        let mut records = Vec::new();
        for entry in self.meta.prefix_iter(txn, DICTIONARY_PREFIX)? {
            let (key, record) = entry?;
            let installed_at = Installed::read(0, record).map_or(0, |installed| installed.installed_at);
            records.push((key.to_owned(), installed_at));
        }
        // Keys sort by number (zero-padded); each is needed until its successor's position.
        let unneeded: Vec<String> = records
            .windows(2)
            .filter(|pair| pair[1].1 <= first_position)
            .map(|pair| pair[0].0.clone())
            .collect();
        for key in unneeded {
            self.meta.delete(txn, &key)?;
        }
        Ok(())
    }

    /// The position of the outbox's first entry, or the next row's when it is empty.
    pub(super) fn first_position_in(&self, txn: &RoTxn) -> Result<u64> {
        match self.outbox.first(txn)? {
            Some((seq, _)) => Ok(seq),
            None => Ok(read_u64(self.meta, txn, META_NEXT_SEQ)?.max(1)),
        }
    }
}
