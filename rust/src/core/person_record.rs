//! A person as the store and the outbox keep it. The commit reads, updates and writes persons
//! under LMDB's single writer, so the layout is made for it: a fixed header (id, uuid,
//! `created_at`, version, identified) that events needing no more read in place, the distinct
//! ids, then the properties' JSON text as it is, a table of where its entries are and their
//! order by key. A person snapshot row carries the same bytes, so writing one is a copy.
//!
//! Numbers are little-endian; table entries are LEB128: per entry its key's length (shifted, with
//! `once` in the low bit) and its value's length, then per entry an entry position, in key order.

use std::borrow::Cow;

use uuid::Uuid;

use super::error::{CoreError, Result};
use super::person_properties::{escaped, key_of, split_json, write_split, Entry, PersonProperties};
use super::rawjson::RawObject;

fn corrupt(what: &str) -> CoreError {
    CoreError::Store(format!("a stored person is corrupt: {what}"))
}

/// Reads the stored layout front to back.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.bytes.len() {
            return Err(corrupt("it ends early"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32> {
        let mut word = [0; 4];
        word.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(word))
    }

    fn text(&mut self) -> Result<&'a str> {
        let len = self.u32()? as usize;
        simdutf8::basic::from_utf8(self.take(len)?).map_err(|_| corrupt("text is not UTF-8"))
    }
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_varint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint(bytes: &mut &[u8]) -> Option<u32> {
    let mut value = 0u32;
    for shift in [0, 7, 14, 21, 28] {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u32::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The fixed start of a stored person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonHeader {
    pub id: u64,
    pub uuid: Uuid,
    /// Microseconds since the epoch.
    pub created_at: i64,
    /// Bumped every time the person changes.
    pub version: u64,
    pub is_identified: bool,
}

const HEADER_LEN: usize = 8 + 16 + 8 + 8 + 1;

impl PersonHeader {
    /// Read the header of a stored person, without touching the rest.
    pub fn read(bytes: &[u8]) -> Result<Self> {
        let header = bytes.get(..HEADER_LEN).ok_or_else(|| corrupt("it ends early"))?;
        let word = |at: usize| {
            let mut word = [0; 8];
            word.copy_from_slice(&header[at..at + 8]);
            word
        };
        let mut uuid = [0; 16];
        uuid.copy_from_slice(&header[8..24]);
        Ok(Self {
            id: u64::from_le_bytes(word(0)),
            uuid: Uuid::from_bytes(uuid),
            created_at: i64::from_le_bytes(word(24)),
            version: u64::from_le_bytes(word(32)),
            is_identified: header[40] != 0,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(self.uuid.as_bytes());
        out.extend_from_slice(&self.created_at.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.push(u8::from(self.is_identified));
    }
}

/// Append a person in the stored layout: header, distinct ids, properties.
pub fn encode(header: &PersonHeader, distinct_ids: &[String], properties: &PersonProperties, out: &mut Vec<u8>) {
    let ids: usize = distinct_ids.iter().map(|id| 4 + id.len()).sum();
    out.reserve(HEADER_LEN + 12 + ids + properties.json().len() + 4 * properties.len());
    header.write(out);
    put_u32(out, distinct_ids.len() as u32);
    for id in distinct_ids {
        put_u32(out, id.len() as u32);
        out.extend_from_slice(id.as_bytes());
    }
    put_u32(out, properties.json().len() as u32);
    out.extend_from_slice(properties.json().as_bytes());
    put_u32(out, properties.len() as u32);
    for entry in properties.entries() {
        put_varint(out, (entry.key_end - entry.key_start) << 1 | u32::from(entry.once));
        put_varint(out, entry.value_end - entry.key_end - 2);
    }
    for at in properties.sorted() {
        put_varint(out, *at);
    }
}

/// The stored entry table, read front to back; `None` where it is malformed.
#[derive(Debug, Clone)]
struct Table<'a> {
    bytes: &'a [u8],
    left: u32,
    key_start: u32,
}

impl Iterator for Table<'_> {
    type Item = Entry;

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left as usize))
    }

    fn next(&mut self) -> Option<Entry> {
        self.left = self.left.checked_sub(1)?;
        let key = varint(&mut self.bytes)?;
        let value = varint(&mut self.bytes)?;
        let key_end = self.key_start.checked_add(key >> 1)?;
        let value_end = key_end.checked_add(2)?.checked_add(value)?;
        let entry = Entry {
            key_start: self.key_start,
            key_end,
            value_end,
            once: key & 1 == 1,
        };
        self.key_start = value_end.checked_add(2)?;
        Some(entry)
    }
}

/// A person's distinct ids as stored (each a length, then its text), checked when the person
/// was read and taken apart as they are iterated: reading a person allocates nothing, and a
/// person read once serves every row that shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DistinctIds<'a> {
    bytes: &'a [u8],
    count: u32,
}

impl<'a> DistinctIds<'a> {
    pub fn iter(&self) -> impl Iterator<Item = &'a str> {
        let mut reader = Reader { bytes: self.bytes };
        // `PersonRef::parse` read every one of them already, so none of this can fail.
        (0..self.count).map_while(move |_| reader.text().ok())
    }
}

/// A stored person, borrowed: what a person snapshot row is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonRef<'a> {
    pub id: u64,
    pub uuid: Uuid,
    pub created_at: i64,
    pub version: u64,
    pub is_identified: bool,
    pub distinct_ids: DistinctIds<'a>,
    json: &'a str,
    count: u32,
    /// The entry table, then the key order.
    table: &'a [u8],
    /// Where the key order starts in `table`.
    order: usize,
}

impl<'a> PersonRef<'a> {
    /// Read a stored person, checking that its table matches its text, so that nothing read
    /// from it later can slice the text wrongly.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let header = PersonHeader::read(bytes)?;
        let mut reader = Reader {
            bytes: &bytes[HEADER_LEN..],
        };
        let id_count = reader.u32()?;
        let ids = reader.bytes;
        for _ in 0..id_count {
            reader.text()?;
        }
        let distinct_ids = DistinctIds {
            bytes: &ids[..ids.len() - reader.bytes.len()],
            count: id_count,
        };
        let json = reader.text()?;
        let count = reader.u32()?;
        let mut person = Self {
            id: header.id,
            uuid: header.uuid,
            created_at: header.created_at,
            version: header.version,
            is_identified: header.is_identified,
            distinct_ids,
            json,
            count,
            table: reader.bytes,
            order: 0,
        };
        let mismatch = || corrupt("its property table does not match its properties");
        let fits = |at: u32| json.is_char_boundary(at as usize);
        let mut entries = person.entries();
        let mut seen = 0;
        for entry in &mut entries {
            seen += 1;
            let within = (entry.value_end as usize) < json.len()
                && [
                    entry.key_start - 1,
                    entry.key_start,
                    entry.key_end,
                    entry.key_end + 2,
                    entry.value_end,
                ]
                .into_iter()
                .all(fits);
            if !within {
                return Err(mismatch());
            }
        }
        if seen != count || !json.starts_with('{') || !json.ends_with('}') {
            return Err(mismatch());
        }
        person.order = person.table.len() - entries.bytes.len();
        let mut order = entries.bytes;
        for _ in 0..count {
            if varint(&mut order).is_none_or(|at| at >= count) {
                return Err(mismatch());
            }
        }
        if !order.is_empty() {
            return Err(mismatch());
        }
        Ok(person)
    }

    fn entries(&self) -> Table<'a> {
        Table {
            bytes: self.table,
            left: self.count,
            key_start: 2,
        }
    }

    /// The properties as a JSON object: all of them, or those `$set_once` wrote, or the others.
    pub fn properties_json(&self, once: Option<bool>) -> String {
        match once {
            None => self.json.to_owned(),
            Some(once) => split_json(self.json, self.entries(), once),
        }
    }

    /// All the properties: the JSON object as stored.
    pub fn json(&self) -> &'a str {
        self.json
    }

    /// All the properties with `shown`'s values (a JSON object) laid over them, as JavaScript's
    /// `{...properties, ...shown}`: each value spliced in where the entry table says its key's
    /// value is, the text around it copied, none of it parsed. `None` when `shown` is no object.
    pub fn json_with(&self, shown: &str) -> Option<String> {
        let shown = RawObject::parse(shown).ok()?;
        let mut over: Vec<(Cow<'_, str>, &str, bool)> = shown
            .entries
            .iter()
            .map(|(key, value)| (escaped(key), value.as_ref(), false))
            .collect();
        let mut out =
            String::with_capacity(self.json.len() + over.iter().map(|(k, v, _)| k.len() + v.len() + 4).sum::<usize>());
        let mut copied = 0;
        for entry in self.entries() {
            let key = key_of(self.json, &entry);
            if let Some((_, value, used)) = over.iter_mut().rev().find(|(k, _, _)| k == key) {
                let value_start = entry.key_end as usize + 2;
                out.push_str(&self.json[copied..value_start]);
                out.push_str(value);
                copied = entry.value_end as usize;
                *used = true;
            }
        }
        // Keys the person lacks go at the end, the last of a repeated one kept.
        out.push_str(&self.json[copied..self.json.len() - 1]);
        let mut first = self.count == 0;
        for (at, (key, value, used)) in over.iter().enumerate() {
            if *used || over[at + 1..].iter().any(|(k, _, _)| k == key) {
                continue;
            }
            out.push_str(if std::mem::take(&mut first) { "\"" } else { ",\"" });
            out.push_str(key);
            out.push_str("\":");
            out.push_str(value);
        }
        out.push('}');
        Some(out)
    }

    /// Write the properties `$set_once` wrote (`once`), or the others, as a JSON object.
    pub fn write_split(&self, once: bool, out: &mut impl std::fmt::Write) {
        write_split(self.json, self.entries(), once, out);
    }

    /// Where this person's properties are read from. Two persons read from the very same bytes
    /// (the person held once by an entry of its commit, read again for a later event) have the
    /// same key while those bytes are borrowed, and then equal properties.
    pub fn properties_key(&self) -> (*const u8, usize, *const u8, usize) {
        (
            self.json.as_ptr(),
            self.json.len(),
            self.table.as_ptr(),
            self.table.len(),
        )
    }

    /// The properties, owned.
    pub fn properties(&self) -> PersonProperties {
        let count = self.count as usize;
        let mut entries = Vec::with_capacity(count);
        entries.extend(self.entries());
        let mut order = &self.table[self.order..];
        let mut sorted = Vec::with_capacity(count);
        sorted.extend((0..count).map_while(|_| varint(&mut order)));
        PersonProperties::from_parts(self.json.to_owned(), entries, sorted)
    }

    /// Whether the key order really is one; a store written by this code always has it right.
    #[cfg(test)]
    pub fn is_in_key_order(&self) -> bool {
        let properties = self.properties();
        let keys: Vec<&str> = properties
            .sorted()
            .iter()
            .map(|&at| super::person_properties::key_of(properties.json(), &properties.entries()[at as usize]))
            .collect();
        keys.windows(2).all(|pair| pair[0] < pair[1])
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::PersonRef;
    use crate::core::person::{Person, PropertyUpdate};

    fn stored(set: &[(&str, &str)]) -> Vec<u8> {
        let person = Person::new(1, Uuid::nil(), 0, "d", &PropertyUpdate::of(set, &[], &[]));
        let mut encoded = Vec::new();
        person.encode(&mut encoded);
        encoded
    }

    #[test]
    fn values_shown_over_a_person_are_spliced_in_place_and_new_keys_appended() {
        let encoded = stored(&[("a", "1"), ("line\nbreak", r#""x""#), ("b", "[1]")]);
        let person = PersonRef::parse(&encoded).unwrap();
        assert_eq!(
            person
                .json_with(r#"{"line\nbreak":"y","c":null,"a":2,"a":3}"#)
                .as_deref(),
            Some(r#"{"a":3,"line\nbreak":"y","b":[1],"c":null}"#)
        );
        assert_eq!(person.json_with("{}").as_deref(), Some(person.json()));
        assert_eq!(person.json_with("[1]"), None);
        let encoded = stored(&[]);
        let empty = PersonRef::parse(&encoded).unwrap();
        assert_eq!(empty.json_with(r#"{"a":1}"#).as_deref(), Some(r#"{"a":1}"#));
    }
}
