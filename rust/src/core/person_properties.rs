//! A person's properties as the commit works on them: the very JSON object an event row shows
//! (`person_properties`), in the order keys were first written, with a table of where each entry
//! is and the entries in key order. An update's keys come sorted from decoding, so finding them
//! all is one merge of two sorted lists, and applying them one pass of copying: no hashing, and
//! no key lookup that a hostile list of keys could make slow.

use std::borrow::Cow;
use std::cmp::Ordering;

use super::rawjson;

/// One property in the JSON text. Its key (escaped, between quotes) starts two bytes after the
/// previous entry's value ends (`,"`), or after `{"` for the first; its value starts two bytes
/// after the key ends (`":`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) key_start: u32,
    pub(super) key_end: u32,
    pub(super) value_end: u32,
    /// Whether `$set_once` (rather than `$set`) wrote it.
    pub(super) once: bool,
}

/// A property an update writes: key as it appears in JSON (escaped), raw JSON value, and the
/// entry it overwrites, if the key is there already.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    pub key: &'a str,
    pub value: &'a str,
    pub once: bool,
    pub at: Option<u32>,
}

/// A key as it appears between the quotes of a JSON object, escaped as `rawjson` writes it.
pub fn escaped(key: &str) -> Cow<'_, str> {
    if key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        return Cow::Borrowed(key);
    }
    let literal = rawjson::string_literal(key);
    Cow::Owned(literal[1..literal.len() - 1].to_owned())
}

/// A person's properties: a JSON object in the order keys were first written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonProperties {
    json: String,
    entries: Vec<Entry>,
    /// Entry positions in key order.
    sorted: Vec<u32>,
}

impl Default for PersonProperties {
    fn default() -> Self {
        Self {
            json: "{}".to_owned(),
            entries: Vec::new(),
            sorted: Vec::new(),
        }
    }
}

pub(super) fn key_of<'j>(json: &'j str, entry: &Entry) -> &'j str {
    &json[entry.key_start as usize..entry.key_end as usize]
}

pub(super) fn value_of<'j>(json: &'j str, entry: &Entry) -> &'j str {
    &json[entry.key_end as usize + 2..entry.value_end as usize]
}

fn push_entry(json: &mut String, entries: &mut Vec<Entry>, key: &str, value: &str, once: bool) {
    json.push_str(if entries.is_empty() { "\"" } else { ",\"" });
    let key_start = json.len() as u32;
    json.push_str(key);
    let key_end = json.len() as u32;
    json.push_str("\":");
    json.push_str(value);
    entries.push(Entry {
        key_start,
        key_end,
        value_end: json.len() as u32,
        once,
    });
}

/// Copy consecutive entries of `from` as they are, moving their offsets along.
fn copy_run(json: &mut String, entries: &mut Vec<Entry>, from: &str, run: &[Entry]) {
    let (Some(first), Some(last)) = (run.first(), run.last()) else {
        return;
    };
    if !entries.is_empty() {
        json.push(',');
    }
    let (start, to) = (first.key_start - 1, json.len() as u32);
    json.push_str(&from[start as usize..last.value_end as usize]);
    entries.extend(run.iter().map(|entry| Entry {
        key_start: entry.key_start - start + to,
        key_end: entry.key_end - start + to,
        value_end: entry.value_end - start + to,
        once: entry.once,
    }));
}

impl PersonProperties {
    pub(super) fn from_parts(json: String, entries: Vec<Entry>, sorted: Vec<u32>) -> Self {
        Self { json, entries, sorted }
    }

    pub(super) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub(super) fn sorted(&self) -> &[u32] {
        &self.sorted
    }

    /// All of them, as PostHog shows a person: the JSON object text.
    pub fn json(&self) -> &str {
        &self.json
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The escaped key at an entry.
    pub fn key(&self, at: u32) -> &str {
        key_of(&self.json, &self.entries[at as usize])
    }

    /// The raw value at an entry, and whether `$set_once` wrote it.
    pub fn at(&self, at: u32) -> (&str, bool) {
        let entry = &self.entries[at as usize];
        (value_of(&self.json, entry), entry.once)
    }

    /// Escaped key, raw value and whether `$set_once` wrote it, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, bool)> + '_ {
        self.entries
            .iter()
            .map(|entry| (key_of(&self.json, entry), value_of(&self.json, entry), entry.once))
    }

    /// The entry of an (escaped) key.
    pub fn find(&self, escaped_key: &str) -> Option<u32> {
        let at = self.sorted.binary_search_by(|&at| self.key(at).cmp(escaped_key)).ok()?;
        Some(self.sorted[at])
    }

    /// The raw value of a key, and whether `$set_once` wrote it.
    pub fn get(&self, key: &str) -> Option<(&str, bool)> {
        Some(self.at(self.find(&escaped(key))?))
    }

    /// Where each of `keys` (escaped, in key order, repeats allowed) is, into `found[index]`:
    /// one merge of the two sorted lists.
    pub fn join<'k>(&self, keys: impl Iterator<Item = (usize, &'k str)>, found: &mut [Option<u32>]) {
        let mut mine = self.sorted.iter().copied().peekable();
        for (index, key) in keys {
            found[index] = loop {
                let Some(&at) = mine.peek() else { break None };
                match self.key(at).cmp(key) {
                    Ordering::Less => {
                        mine.next();
                    }
                    Ordering::Equal => break Some(at),
                    Ordering::Greater => break None,
                }
            };
        }
    }

    /// Hogflare's split: the properties `$set_once` wrote (`once`), or the others.
    pub fn split_json(&self, once: bool) -> String {
        split_json(&self.json, self.entries.iter().copied(), once)
    }

    /// Write `changes` in order, then remove the entries `unset` lists: a change with `at`
    /// overwrites that entry in place; one without adds its key at the end, and when several
    /// add the same key it goes where the first put it, with the last one's value. `new_keys`
    /// lists the changes without `at` in key order (ties in change order).
    pub fn update(&mut self, changes: &[Change<'_>], new_keys: &[u32], unset: &[u32]) {
        let kept = self.entries.len();
        // What each existing entry becomes; later changes win.
        let mut over: Vec<Option<(&str, bool)>> = vec![None; kept];
        for change in changes {
            if let Some(at) = change.at {
                over[at as usize] = Some((change.value, change.once));
            }
        }
        let removes = !unset.is_empty();
        let mut gone = vec![false; if removes { kept } else { 0 }];
        for &at in unset {
            gone[at as usize] = true;
        }
        let removed = |at: usize| removes && gone[at];
        // A new key written more than once: the first change keeps its place and takes the
        // last one's value; the others go.
        let mut value_of_new: Vec<Option<(&str, bool)>> = vec![None; changes.len()];
        let mut first_of_key: Vec<u32> = Vec::with_capacity(new_keys.len());
        for run in new_keys.chunk_by(|&a, &b| changes[a as usize].key == changes[b as usize].key) {
            let (first, last) = (run[0] as usize, run[run.len() - 1] as usize);
            value_of_new[first] = Some((changes[last].value, changes[last].once));
            first_of_key.push(first as u32);
        }

        let extra: usize = changes
            .iter()
            .map(|change| change.key.len() + change.value.len() + 4)
            .sum();
        let mut json = String::with_capacity(self.json.len() + extra);
        json.push('{');
        let mut entries = Vec::with_capacity(kept + first_of_key.len());
        // Where each old entry lands, once some are removed.
        let mut moved: Vec<u32> = Vec::new();
        // Entries neither written nor removed are copied in runs.
        let mut run = 0;
        for (at, (entry, value)) in self.entries.iter().zip(&over).enumerate() {
            let gone = removed(at);
            if removes {
                moved.push(if gone {
                    u32::MAX
                } else {
                    (entries.len() + at - run) as u32
                });
            }
            if value.is_none() && !gone {
                continue;
            }
            copy_run(&mut json, &mut entries, &self.json, &self.entries[run..at]);
            run = at + 1;
            if let (Some((value, once)), false) = (value, gone) {
                push_entry(&mut json, &mut entries, key_of(&self.json, entry), value, *once);
            }
        }
        copy_run(&mut json, &mut entries, &self.json, &self.entries[run..]);
        let mut placed: Vec<u32> = vec![u32::MAX; changes.len()];
        for (index, change) in changes.iter().enumerate() {
            if let Some((value, once)) = value_of_new[index] {
                placed[index] = entries.len() as u32;
                push_entry(&mut json, &mut entries, change.key, value, once);
            }
        }
        json.push('}');

        if removes || !first_of_key.is_empty() {
            let old = self.sorted.iter().filter_map(|&at| {
                let at = if removes { moved[at as usize] } else { at };
                (at != u32::MAX).then_some(at)
            });
            let new = first_of_key.iter().map(|&index| placed[index as usize]);
            self.sorted = merge_sorted(&json, &entries, old, new);
        }
        self.json = json;
        self.entries = entries;
    }
}

fn merge_sorted(json: &str, entries: &[Entry], a: impl Iterator<Item = u32>, b: impl Iterator<Item = u32>) -> Vec<u32> {
    let key = |at: u32| key_of(json, &entries[at as usize]);
    let mut out = Vec::with_capacity(entries.len());
    let (mut a, mut b) = (a.peekable(), b.peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(&x), Some(&y)) if key(x) <= key(y) => a.next(),
            (_, Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, None) => break,
        };
        out.extend(next);
    }
    out
}

pub(super) fn split_json(json: &str, entries: impl Iterator<Item = Entry>, once: bool) -> String {
    let mut out = String::with_capacity(json.len());
    write_split(json, entries, once, &mut out);
    out
}

/// Write the entries `$set_once` wrote (`once`), or the others, as a JSON object.
pub(super) fn write_split(
    json: &str,
    entries: impl Iterator<Item = Entry>,
    once: bool,
    out: &mut impl std::fmt::Write,
) {
    // Entries lie side by side in the text, `"key":value` joined by commas, in the order they
    // were first written, and an update writes its `$set_once` keys together, so a run of one
    // kind is one slice, commas and all. Writing into a `String` or an Arrow string builder
    // cannot fail.
    let mut first = true;
    let mut write = |run: (usize, usize), out: &mut dyn std::fmt::Write| {
        let _ = out.write_str(if first { "{" } else { "," });
        first = false;
        let _ = out.write_str(&json[run.0..run.1]);
    };
    let mut run: Option<(usize, usize)> = None;
    for entry in entries {
        let (start, end) = (entry.key_start as usize - 1, entry.value_end as usize);
        match run {
            Some((from, to)) if entry.once == once && to + 1 == start && json.as_bytes().get(to) == Some(&b',') => {
                run = Some((from, end));
            }
            _ => {
                if let Some(done) = run {
                    write(done, out);
                }
                run = (entry.once == once).then_some((start, end));
            }
        }
    }
    if let Some(done) = run {
        write(done, out);
    }
    let _ = out.write_str(if first { "{}" } else { "}" });
}
