//! Outbox entries compressed with a zstd dictionary trained on the store's own entries.
//!
//! An entry is an event's row and often its person's snapshot: 1.5–3.5 kB of JSON that repeats
//! from one event to the next (property names, the SDK's values, the person's properties).
//! Compressed alone, without a dictionary, an entry only halves, at 10 µs or more; with a
//! dictionary made from the deployment's recent entries it shrinks to a fraction (a tenth, for
//! the benchmarks' pageviews) in 2–4 µs.
//! Every byte a commit does not write is time the store's one write lock is not held for the
//! flush, and an entry under LMDB's ~2 kB leaf limit shares a page instead of taking a page of
//! its own.
//!
//! Dictionaries live in the meta table, numbered from 1; a compressed entry names its own. Each
//! commit uses the latest, so along the outbox the numbers never go down, and a dictionary is
//! forgotten once the outbox's first entry is past the one that replaced it.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use zstd::bulk::{Compressor, Decompressor};

use super::error::{CoreError, Result};

/// The first byte of a compressed entry: the entry's own first byte (its kind, below 0x80) with
/// this bit set, so the rows it holds can be read without decompressing it.
pub const COMPRESSED: u8 = 0x80;
/// Kind, then the dictionary's number (4 bytes, big-endian), then the zstd frame.
const HEADER: usize = 5;
/// zstd's level 1: with a dictionary, negative levels were no faster on entries this size and
/// compressed less.
const LEVEL: i32 = 1;
/// No entry the store makes comes close; a frame claiming more is damaged.
const MAX_ENTRY_BYTES: u64 = 1 << 30;

/// The meta key of dictionary `id`, whose value is its `Installed` record (`RECORD_HEADER`
/// bytes) then the dictionary.
pub fn meta_key(id: u32) -> String {
    format!("{DICTIONARY_PREFIX}{id:010}")
}

pub const RECORD_HEADER: usize = 8;

/// A dictionary as the store records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    pub id: u32,
    /// The first outbox position that may use it (the record's header, big-endian).
    pub installed_at: u64,
}

impl Installed {
    pub fn read(id: u32, record: &[u8]) -> Option<Self> {
        let installed_at = u64::from_be_bytes(record.get(..RECORD_HEADER)?.try_into().ok()?);
        Some(Self { id, installed_at })
    }
}

pub const DICTIONARY_PREFIX: &str = "outbox.dictionary.";
/// The meta key of the number of the dictionary commits use (absent or 0: none yet).
pub const META_CURRENT: &str = "outbox.dictionary";

pub fn is_compressed(entry: &[u8]) -> bool {
    entry.first().is_some_and(|kind| kind & COMPRESSED != 0)
}

/// The number of the dictionary a compressed entry needs.
pub fn dictionary_of(entry: &[u8]) -> Result<u32> {
    entry
        .get(1..HEADER)
        .and_then(|id| <[u8; 4]>::try_from(id).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| CoreError::Store("a compressed outbox entry is cut short".into()))
}

fn zstd_failed(what: &str, err: &std::io::Error) -> CoreError {
    CoreError::Store(format!("{what}: {err}"))
}

/// Compresses the entries of commits with one dictionary.
pub struct EntryCompressor {
    id: u32,
    zstd: Compressor<'static>,
    frame: Vec<u8>,
}

impl EntryCompressor {
    pub fn new(id: u32, dictionary: &[u8]) -> Result<Self> {
        let zstd = Compressor::with_dictionary(LEVEL, dictionary)
            .map_err(|err| zstd_failed("cannot load the outbox dictionary", &err))?;
        Ok(Self {
            id,
            zstd,
            frame: Vec::new(),
        })
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// `entry` compressed into `out` (replacing what it held); `false`, and `out` left alone,
    /// when compressing does not make it smaller.
    pub fn compress(&mut self, entry: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        let Some(&kind) = entry.first().filter(|kind| **kind & COMPRESSED == 0) else {
            return Ok(false);
        };
        self.frame.clear();
        self.frame.reserve(zstd::zstd_safe::compress_bound(entry.len()));
        self.zstd
            .compress_to_buffer(entry, &mut self.frame)
            .map_err(|err| zstd_failed("cannot compress an outbox entry", &err))?;
        if HEADER + self.frame.len() >= entry.len() {
            return Ok(false);
        }
        out.clear();
        out.push(kind | COMPRESSED);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.frame);
        Ok(true)
    }
}

/// Decompressors kept by an `EntryExpander`: the outbox holds entries of a few dictionaries at
/// most, one following another.
const KEPT_DECOMPRESSORS: usize = 4;

/// Decompresses entries, keeping a decompressor for each of the last dictionaries met.
#[derive(Default)]
pub struct EntryExpander {
    decompressors: HashMap<u32, Decompressor<'static>>,
}

impl EntryExpander {
    /// A compressed entry as it was encoded. `dictionary` reads a dictionary by number, the
    /// first time one is needed.
    pub fn expand(&mut self, entry: &[u8], dictionary: impl FnOnce(u32) -> Result<Option<Vec<u8>>>) -> Result<Vec<u8>> {
        let id = dictionary_of(entry)?;
        if !self.decompressors.contains_key(&id) {
            // A long-lived reader meets dictionary after dictionary; the oldest it keeps is the
            // least likely to be met again, and is loaded again if it is.
            while self.decompressors.len() >= KEPT_DECOMPRESSORS {
                let Some(oldest) = self.decompressors.keys().min().copied() else {
                    break;
                };
                self.decompressors.remove(&oldest);
            }
        }
        let decompressor = match self.decompressors.entry(id) {
            Entry::Occupied(found) => found.into_mut(),
            Entry::Vacant(slot) => {
                let bytes = dictionary(id)?.ok_or_else(|| {
                    CoreError::Store(format!(
                        "an outbox entry was compressed with dictionary {id}, which the store no longer holds"
                    ))
                })?;
                slot.insert(
                    Decompressor::with_dictionary(&bytes)
                        .map_err(|err| zstd_failed("cannot load an outbox dictionary", &err))?,
                )
            }
        };
        let frame = &entry[HEADER..];
        let size = zstd::zstd_safe::get_frame_content_size(frame)
            .ok()
            .flatten()
            .filter(|size| *size <= MAX_ENTRY_BYTES)
            .ok_or_else(|| CoreError::Store("a compressed outbox entry does not say its size".into()))?;
        let expanded = decompressor
            .decompress(frame, size as usize)
            .map_err(|err| zstd_failed("cannot decompress an outbox entry", &err))?;
        if expanded.first().map(|kind| kind | COMPRESSED) != entry.first().copied() {
            return Err(CoreError::Store(
                "a compressed outbox entry does not match its kind".into(),
            ));
        }
        Ok(expanded)
    }
}
