//! What the decoder writes is checked with serde_json, a parser the decoder does not use, so a
//! splice that only sonic-rs forgives still shows up.

use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A key as its decoded bytes: lone UTF-16 surrogates are allowed, as JSON itself allows them.
struct Key(Vec<u8>);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl Visitor<'_> for Bytes {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, value: &str) -> Result<Key, E> {
                Ok(Key(value.as_bytes().to_vec()))
            }
            fn visit_bytes<E>(self, value: &[u8]) -> Result<Key, E> {
                Ok(Key(value.to_vec()))
            }
        }
        deserializer.deserialize_bytes(Bytes)
    }
}

/// The keys of an object, in order, duplicates kept.
struct Keys;

impl<'de> Visitor<'de> for Keys {
    type Value = Vec<Vec<u8>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            map.next_value::<IgnoredAny>()?;
            keys.push(key);
        }
        Ok(keys)
    }
}

fn parse<T>(
    text: &str,
    read: impl FnOnce(&mut serde_json::Deserializer<serde_json::de::StrRead<'_>>) -> serde_json::Result<T>,
) -> Result<T, String> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    deserializer.disable_recursion_limit();
    let value = read(&mut deserializer).map_err(|err| format!("{err} in {text:?}"))?;
    deserializer.end().map_err(|err| format!("{err} in {text:?}"))?;
    Ok(value)
}

/// One JSON value and nothing after it.
pub fn check_value(text: &str) -> Result<(), String> {
    parse(text, |de| IgnoredAny::deserialize(de)).map(|_| ())
}

/// The top-level keys of one JSON object; an error for anything else.
pub fn object_keys(text: &str) -> Result<Vec<Vec<u8>>, String> {
    parse(text, |de| de.deserialize_map(Keys))
}

/// The entries hogflare's scan of valid objects (`json_entries`) reads from `text`, an object
/// serde_json accepted, match serde_json's: the same keys in order, each value one whole JSON
/// value, the values in order in the text.
pub fn check_entries_scan(text: &str, keys: &[Vec<u8>]) {
    use hogflare::core::json_entries::entries_of_valid;
    let entries: Vec<_> = entries_of_valid(text)
        .unwrap_or_else(|_| panic!("the scan refused the object {text:?}"))
        .collect();
    // A key with a lone surrogate is no Rust string: the scan stops there, as sonic-rs does.
    if keys.iter().any(|key| std::str::from_utf8(key).is_err()) {
        return;
    }
    let mut after = 0;
    assert_eq!(entries.len(), keys.len(), "entries of {text:?}");
    for (entry, expected) in entries.iter().zip(keys) {
        let (key, value) = entry.as_ref().unwrap_or_else(|_| panic!("scan of {text:?} failed"));
        assert_eq!(key.as_bytes(), expected.as_slice(), "key in {text:?}");
        check_value(value).unwrap_or_else(|err| panic!("value {value:?} of {text:?}: {err}"));
        let start = value.as_ptr() as usize - text.as_ptr() as usize;
        assert!(start >= after, "values out of order in {text:?}");
        after = start + value.len();
    }
}

/// Keys that occur more than once.
pub fn repeated(keys: &[Vec<u8>]) -> Vec<&[u8]> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<&[u8]> = keys
        .iter()
        .filter(|key| !seen.insert(key.as_slice()))
        .map(Vec::as_slice)
        .collect();
    out.dedup();
    out
}

/// How often each key occurs in objects at any depth of some JSON texts; `None` when serde_json
/// cannot read one of them (it refuses lone surrogates in string values).
pub fn all_keys<'a>(text: &'a str, more: impl Iterator<Item = &'a str>) -> Option<HashMap<Vec<u8>, usize>> {
    let mut counts = HashMap::new();
    for text in std::iter::once(text).chain(more) {
        parse(text, |de| AllKeys(&mut counts).deserialize(de)).ok()?;
    }
    Some(counts)
}

struct AllKeys<'a>(&'a mut HashMap<Vec<u8>, usize>);

impl<'de> DeserializeSeed<'de> for AllKeys<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AllKeys<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            *self.0.entry(key).or_default() += 1;
            map.next_value_seed(AllKeys(self.0))?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(AllKeys(self.0))?.is_some() {}
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_objects_and_repeats() {
        assert!(check_value(r#"{"a":[1,2,{"b":null}]} "#).is_ok());
        assert!(check_value(r#"{"a":1}{"#).is_err());
        assert!(check_value(r#"{"a":1,}"#).is_err());
        assert!(object_keys("[1]").is_err());
        let keys = object_keys(r#"{"a":1,"b":2,"a":3,"\ud800":4}"#).unwrap();
        assert_eq!(repeated(&keys), vec![b"a".as_slice()]);
        let counts = all_keys(r#"[{"a":{"a":1,"b":[{"c":2}]}}]"#, [r#"{"b":0}"#].into_iter()).unwrap();
        assert_eq!(
            (
                counts[b"a".as_slice()],
                counts[b"b".as_slice()],
                counts[b"c".as_slice()]
            ),
            (2, 2, 1)
        );
        let deep = "[".repeat(300) + &"]".repeat(300);
        assert!(check_value(&deep).is_ok());
    }
}
