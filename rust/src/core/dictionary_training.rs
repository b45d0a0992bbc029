//! When the store makes its next outbox dictionary, and from what: entries the sinks read.
//!
//! A dictionary helps only while it looks like the traffic: one made from other entries (a new
//! deployment's test events, a backlog of another shape) leaves entries barely smaller and costs
//! more CPU than none, so the sinks watch how well the current one compresses what they read and
//! a new one is made when it has worn out, besides the schedule of `due`.

use super::outbox_dictionary::{EntryCompressor, Installed};

const DICTIONARY_BYTES: usize = 64 << 10;
/// A dictionary that keeps more than this share of its samples' bytes is not worth its CPU.
const WORTH_KEEPING: f64 = 0.8;
/// Compressed entries read before the current dictionary's share of them is judged.
const JUDGED_AFTER: u64 = 1_000;

/// When the store makes its next dictionary and from how much.
#[derive(Debug, Clone, Copy)]
pub struct DictionaryPolicy {
    /// Entries (or `sample_bytes`, whichever comes first) a dictionary is made from.
    pub samples: usize,
    pub sample_bytes: usize,
}

impl Default for DictionaryPolicy {
    fn default() -> Self {
        Self {
            samples: 1_500,
            sample_bytes: 4 << 20,
        }
    }
}

/// Whether a new dictionary is due with the outbox at `next_seq`: the first as soon as there
/// are samples, then after ten times the rows the last one was made after (the first entries
/// of a new deployment are seldom like its traffic), and at least every million rows.
pub fn due(installed: Option<Installed>, next_seq: u64) -> bool {
    installed.is_none_or(|last| next_seq >= last.installed_at.saturating_mul(10).min(last.installed_at + 1_000_000))
}

/// Samples for the next dictionary, and how well the current one does.
#[derive(Debug, Default)]
pub struct DictionaryTrainer {
    entries: Vec<Vec<u8>>,
    bytes: usize,
    /// After a dictionary that could not be made or was not worth keeping, the outbox position
    /// before which no other is tried.
    not_before: u64,
    /// Entries read that the current dictionary compressed: its number, how many, their bytes
    /// stored and decompressed.
    watched: Option<u32>,
    compressed: u64,
    stored_bytes: u64,
    expanded_bytes: u64,
}

impl DictionaryTrainer {
    /// Whether the entries the sinks read now should be kept as samples.
    pub fn wants_samples(&self, policy: &DictionaryPolicy, installed: Option<Installed>, next_seq: u64) -> bool {
        next_seq >= self.not_before && !self.full(policy) && (due(installed, next_seq) || self.worn_out(installed))
    }

    fn full(&self, policy: &DictionaryPolicy) -> bool {
        self.entries.len() >= policy.samples || self.bytes >= policy.sample_bytes
    }

    /// Keep `entry`, unless there are enough; whether it was kept.
    pub fn push(&mut self, policy: &DictionaryPolicy, entry: &[u8]) -> bool {
        if self.full(policy) {
            return false;
        }
        self.bytes += entry.len();
        self.entries.push(entry.to_vec());
        true
    }

    /// A compressed entry read: `stored` bytes in the outbox, `expanded` once decompressed with
    /// dictionary `id`. Only the latest dictionary's entries count.
    pub fn observe(&mut self, id: u32, stored: usize, expanded: usize) {
        if self.watched.is_none_or(|watched| watched < id) {
            self.watched = Some(id);
            (self.compressed, self.stored_bytes, self.expanded_bytes) = (0, 0, 0);
        }
        if self.watched == Some(id) {
            self.compressed += 1;
            self.stored_bytes += stored as u64;
            self.expanded_bytes += expanded as u64;
        }
    }

    /// Whether the current dictionary leaves the entries read with it at more than twice the
    /// share it left of its own samples (and at more than a fifth): made from entries unlike
    /// the traffic, or the traffic changed.
    fn worn_out(&self, installed: Option<Installed>) -> bool {
        let Some(installed) = installed else {
            return false;
        };
        if self.watched != Some(installed.id) || self.compressed < JUDGED_AFTER {
            return false;
        }
        let share = self.stored_bytes as f64 / self.expanded_bytes.max(1) as f64;
        share > (2.0 * installed.share).max(0.2)
    }

    /// Make a dictionary from the samples (and forget them), once there are enough: the
    /// dictionary and the share of the samples' bytes it leaves. `None` when it could not be
    /// made or does not compress them well enough, in which case none is tried again before
    /// the outbox reaches twice `next_seq`.
    pub fn train(&mut self, policy: &DictionaryPolicy, next_seq: u64) -> Option<(Vec<u8>, f64)> {
        if !self.full(policy) {
            return None;
        }
        let samples = std::mem::take(&mut self.entries);
        let bytes = std::mem::take(&mut self.bytes);
        // zstd wants samples of about ten times the dictionary's size.
        let size = DICTIONARY_BYTES.min(bytes / 10).max(1 << 10);
        let made = zstd::dict::from_samples(&samples, size)
            .ok()
            .map(|dictionary| {
                let share = compressed_share(&dictionary, &samples);
                (dictionary, share)
            })
            .filter(|(_, share)| *share <= WORTH_KEEPING);
        if made.is_none() {
            self.not_before = next_seq.saturating_mul(2).max(next_seq + 1);
        }
        made
    }
}

/// The share of the samples' bytes left once compressed with `dictionary`.
fn compressed_share(dictionary: &[u8], samples: &[Vec<u8>]) -> f64 {
    let Ok(mut compressor) = EntryCompressor::new(0, dictionary) else {
        return f64::INFINITY;
    };
    let (mut before, mut after) = (0usize, 0usize);
    let mut out = Vec::new();
    for sample in samples {
        before += sample.len();
        after += match compressor.compress(sample, &mut out) {
            Ok(true) => out.len(),
            _ => sample.len(),
        };
    }
    after as f64 / before.max(1) as f64
}
