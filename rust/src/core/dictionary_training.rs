//! When the store makes its next outbox dictionary, and from what: entries the sinks read.
//!
//! A dictionary helps only while it looks like the traffic. One made from other entries (a new
//! deployment's test events, the seeding of its users, a backfill of another shape) leaves the
//! traffic's entries barely smaller and costs more CPU than none. So the sinks watch the share of
//! the bytes the current dictionary leaves of the entries they read lately; while that is more
//! than `GOOD_ENOUGH`, a challenger is made from the entries read next, and it replaces the
//! current one if it leaves clearly fewer bytes of entries neither was made from. A lost
//! challenge doubles the wait for the next (10,000 rows at first, a million at most), so a store
//! whose entries simply do not compress better tries now and then, not all the time; but when
//! the traffic changes (the share left grows by a quarter, or the entries' size by half, since the
//! last challenge) the next one comes at once.

use super::outbox_dictionary::{EntryCompressor, Installed};

const DICTIONARY_BYTES: usize = 64 << 10;
/// A first dictionary that keeps more than this share of its samples' bytes is not worth its CPU.
const WORTH_KEEPING: f64 = 0.8;
/// A challenger must leave at most this share of what the current dictionary leaves: two
/// dictionaries made from the same traffic differ by a tenth.
const CLEARLY_BETTER: f64 = 0.8;
/// A dictionary that leaves at most this share of the entries read is left alone.
const GOOD_ENOUGH: f64 = 0.15;
/// Entries the current dictionary compressed, read before it is judged.
const JUDGED_AFTER: u64 = 1_000;
/// A share left, or an entry size, this much off the one at the last challenge calls the next
/// at once.
const CHANGED: f64 = 1.25;
const RESIZED: f64 = 1.5;
/// The rows between two challenges after a lost one: doubled by each loss, up to the most.
const FIRST_WAIT: u64 = 10_000;
const LONGEST_WAIT: u64 = 1_000_000;

/// From how much the store makes a dictionary.
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

/// Samples for the next dictionary, and how well the current one does.
#[derive(Debug, Default)]
pub struct DictionaryTrainer {
    entries: Vec<Vec<u8>>,
    bytes: usize,
    /// The outbox position before which no dictionary is made, after the last attempt, and the
    /// rows the next lost attempt waits.
    not_before: u64,
    wait: u64,
    /// Entries read lately that `watched` (the current dictionary) compressed, or stored as
    /// they were once it was installed: how many, their bytes as stored and as read.
    watched: Option<u32>,
    judged: u64,
    stored_bytes: u64,
    expanded_bytes: u64,
    /// At the last attempt: the share the current dictionary left of what was read, if it had
    /// been judged, and the samples' mean size.
    share_challenged: Option<f64>,
    entry_bytes_challenged: Option<f64>,
    /// The outbox positions from which entries are read for the first time, as samples and as
    /// judged: the lake and the pipelines read the same entries, and a sink retries a read.
    next_sampled: u64,
    next_judged: u64,
}

impl DictionaryTrainer {
    /// Whether the entries the sinks read now should be kept as samples: with no dictionary,
    /// or one that leaves too much of what is read.
    pub fn wants_samples(&self, policy: &DictionaryPolicy, installed: Option<Installed>, next_seq: u64) -> bool {
        if self.full(policy) {
            return false;
        }
        let Some(current) = installed else {
            return next_seq >= self.not_before;
        };
        if self.watched != Some(current.id) || self.judged < JUDGED_AFTER {
            return false;
        }
        let share = self.stored_bytes as f64 / self.expanded_bytes.max(1) as f64;
        let entry_bytes = self.expanded_bytes as f64 / self.judged as f64;
        let changed = self.share_challenged.is_some_and(|before| share > CHANGED * before)
            || self
                .entry_bytes_challenged
                .is_some_and(|before| entry_bytes > RESIZED * before || RESIZED * entry_bytes < before);
        share > GOOD_ENOUGH && (next_seq >= self.not_before || changed)
    }

    fn full(&self, policy: &DictionaryPolicy) -> bool {
        self.entries.len() >= policy.samples || self.bytes >= policy.sample_bytes
    }

    /// Whether the entry at `position` is read for the first time as a sample: one taken twice
    /// could land both in a challenger's training and in the samples held back to judge it.
    pub fn first_sampled(&mut self, position: u64) -> bool {
        first_read(&mut self.next_sampled, position)
    }

    /// Whether the entry at `position` is read for the first time for the judgement.
    pub fn first_judged(&mut self, position: u64) -> bool {
        first_read(&mut self.next_judged, position)
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

    /// An entry committed since dictionary `id` was installed, read: `stored` bytes in the
    /// outbox, `expanded` as the sink got it (the same when it was stored uncompressed). The
    /// counts are halved as they grow, so they tell of the last few thousand entries.
    pub fn observe(&mut self, id: u32, stored: usize, expanded: usize) {
        if self.watched != Some(id) {
            self.watched = Some(id);
            (self.judged, self.stored_bytes, self.expanded_bytes) = (0, 0, 0);
        }
        self.judged += 1;
        self.stored_bytes += stored as u64;
        self.expanded_bytes += expanded as u64;
        if self.judged >= 4 * JUDGED_AFTER {
            self.judged /= 2;
            self.stored_bytes /= 2;
            self.expanded_bytes /= 2;
        }
    }

    /// Once there are enough samples, make a dictionary from them (and forget them), and keep
    /// it if there is no `current` one and it is worth keeping, or if it clearly beats `current`.
    pub fn train(&mut self, policy: &DictionaryPolicy, next_seq: u64, current: Option<&[u8]>) -> Option<Vec<u8>> {
        if !self.full(policy) {
            return None;
        }
        let samples = std::mem::take(&mut self.entries);
        let bytes = std::mem::take(&mut self.bytes);
        self.share_challenged =
            (self.judged >= JUDGED_AFTER).then(|| self.stored_bytes as f64 / self.expanded_bytes.max(1) as f64);
        self.entry_bytes_challenged = Some(bytes as f64 / samples.len().max(1) as f64);
        (self.watched, self.judged, self.stored_bytes, self.expanded_bytes) = (None, 0, 0, 0);
        let made = challenger(samples, bytes, current);
        self.wait = match made {
            Some(_) => FIRST_WAIT,
            None => (self.wait * 2).clamp(FIRST_WAIT, LONGEST_WAIT),
        };
        self.not_before = next_seq.saturating_add(self.wait);
        made
    }
}

/// A dictionary made from the samples, if it leaves of the entries kept back at most the share
/// `WORTH_KEEPING` (with no `current` one) or clearly less than `current` does.
fn challenger(samples: Vec<Vec<u8>>, bytes: usize, current: Option<&[u8]>) -> Option<Vec<u8>> {
    // Every third sample is kept back to judge the dictionary on entries it was not made
    // from (on its own samples any new one would look best).
    let (mut training, mut judging) = (Vec::with_capacity(samples.len()), Vec::new());
    for (index, sample) in samples.into_iter().enumerate() {
        if index % 3 == 2 {
            judging.push(sample);
        } else {
            training.push(sample);
        }
    }
    // zstd wants samples of about ten times the dictionary's size.
    let size = DICTIONARY_BYTES.min(bytes * 2 / 30).max(1 << 10);
    let made = zstd::dict::from_samples(&training, size).ok()?;
    let share = compressed_share(&made, &judging);
    let bar = current.map_or(WORTH_KEEPING, |current| {
        CLEARLY_BETTER * compressed_share(current, &judging)
    });
    (share <= bar).then_some(made)
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

fn first_read(next: &mut u64, position: u64) -> bool {
    if position < *next {
        return false;
    }
    *next = position + 1;
    true
}
