//! JSON kept as text. Event properties are stored exactly as the SDK sent them (key order,
//! number spelling) and extended by splicing entries onto the end, which costs a copy instead of
//! a parse and a serialisation per event.

use std::borrow::Cow;

use sonic_rs::LazyValue;

use super::error::{CoreError, Result};

/// Where the JSON breaks, on one line. sonic-rs's message goes on with an excerpt of the text
/// around that place: the client's own bytes, which an error answer or a log line should not echo.
fn invalid(err: &sonic_rs::Error) -> CoreError {
    let message = err.to_string();
    let first_line = message.split('\n').next().unwrap_or_default().trim_end();
    CoreError::InvalidJson(first_line.to_owned())
}

/// JSON text a checking parser has already accepted: a value inside a document that was
/// iterated with validation. Only this module and `request` make these.
#[derive(Debug, Clone, Copy)]
pub struct Validated<'a>(pub(super) &'a str);

impl<'a> Validated<'a> {
    pub fn as_str(self) -> &'a str {
        self.0
    }
}

/// JSON's whitespace, which is all that may surround a value.
pub const WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// The code unit of the `\uXXXX` escape at `at`, when four hex digits follow its `\u`.
fn unicode_escape_at(bytes: &[u8], at: usize) -> Option<u16> {
    let digits = bytes.get(at..at + 6)?.strip_prefix(b"\\u")?;
    u16::from_str_radix(std::str::from_utf8(digits).ok()?, 16)
        .ok()
        .filter(|_| digits.iter().all(u8::is_ascii_hexdigit))
}

/// Check every `\u` escape of JSON text: four hex digits, and a surrogate only as the first half
/// of a pair followed by the second. sonic-rs's checking iteration steps over a `\u` escape
/// without reading it, so text it accepted counts as validated only once this has passed too.
pub fn check_unicode_escapes(text: &str) -> Result<()> {
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = memchr::memchr(b'\\', &bytes[at..]) {
        let slash = at + found;
        match bytes.get(slash + 1) {
            Some(b'u') => {}
            Some(_) => {
                at = slash + 2;
                continue;
            }
            None => return Err(CoreError::InvalidJson("a string ends in a lone backslash".into())),
        }
        let unit = unicode_escape_at(bytes, slash)
            .ok_or_else(|| CoreError::InvalidJson("invalid \\u escape in a string".into()))?;
        at = slash + 6;
        match unit {
            0xD800..=0xDBFF => match unicode_escape_at(bytes, at) {
                Some(0xDC00..=0xDFFF) => at += 6,
                _ => return Err(CoreError::InvalidJson("unpaired surrogate in a string".into())),
            },
            0xDC00..=0xDFFF => return Err(CoreError::InvalidJson("unpaired surrogate in a string".into())),
            _ => {}
        }
    }
    Ok(())
}

/// Replace each half of a surrogate pair that stands alone (`\ud83d` without its `\ude00`)
/// with `\uFFFD`. A JavaScript string cut inside an emoji keeps one half, `JSON.stringify`
/// writes it so, and JSON parsers refuse it: PostHog's capture replaces it before parsing, so
/// one cut emoji does not cost its request every other event. Text without one is borrowed.
pub fn replace_lone_surrogates(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let may_hold_one = memchr::memmem::find_iter(bytes, b"\\u").any(|at| {
        matches!(
            bytes.get(at + 2..at + 4),
            Some([b'd' | b'D', b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F'])
        )
    });
    if !may_hold_one {
        return Cow::Borrowed(text);
    }
    let mut out: Option<String> = None;
    let (mut at, mut copied) = (0, 0);
    while let Some(found) = bytes.get(at..).and_then(|rest| memchr::memchr(b'\\', rest)) {
        let slash = at + found;
        let Some(unit) = unicode_escape_at(bytes, slash) else {
            // Another escape (`\\` among them, whose second backslash starts nothing).
            at = slash + 2;
            continue;
        };
        at = slash + 6;
        let lone = match unit {
            0xD800..=0xDBFF if matches!(unicode_escape_at(bytes, at), Some(0xDC00..=0xDFFF)) => {
                at += 6;
                false
            }
            0xD800..=0xDFFF => true,
            _ => false,
        };
        if lone {
            let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
            out.push_str(&text[copied..slash]);
            out.push_str("\\uFFFD");
            copied = at;
        }
    }
    match out {
        Some(mut out) => {
            out.push_str(&text[copied..]);
            Cow::Owned(out)
        }
        None => Cow::Borrowed(text),
    }
}

/// The elements of a JSON array whose text has already been validated, as raw text. The
/// iteration ends at the array's closing bracket: text after it (the rest of the document the
/// array is part of) is not read.
pub fn validated_elements(array: Validated<'_>) -> Result<Vec<&str>> {
    #[allow(unsafe_code)]
    // SAFETY: as in `RawObject::parse_validated`.
    let iter = unsafe { sonic_rs::to_array_iter_unchecked(array.0) };
    let mut out = Vec::new();
    for element in iter {
        match element.map_err(|err| invalid(&err))?.as_raw_cow() {
            Cow::Borrowed(text) => out.push(text),
            // A `&str` input always yields borrowed slices.
            Cow::Owned(_) => {
                return Err(CoreError::InvalidShape(
                    "array element is not a slice of its input".into(),
                ))
            }
        }
    }
    Ok(out)
}

/// A JSON object as its entries: decoded key, raw value text.
#[derive(Debug, Default, Clone)]
pub struct RawObject<'a> {
    pub entries: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> RawObject<'a> {
    /// Read the entries of an object, validating every value.
    pub fn parse(text: &'a str) -> Result<Self> {
        Self::collect(sonic_rs::to_object_iter(text))
    }

    /// Read the entries of an object whose text has already been validated as JSON.
    pub fn parse_validated(text: Validated<'a>) -> Result<Self> {
        #[allow(unsafe_code)]
        // SAFETY: `Validated` is only made from text a checking parser has accepted, which is
        // what the unchecked iterator requires; it then skips values without re-validating them.
        let entries = unsafe { sonic_rs::to_object_iter_unchecked(text.0) };
        Self::collect(entries)
    }

    fn collect(iter: sonic_rs::ObjectJsonIter<'a>) -> Result<Self> {
        let mut entries = Vec::with_capacity(16);
        for entry in iter {
            let (key, value): (Cow<'a, str>, LazyValue<'a>) = entry.map_err(|err| invalid(&err))?;
            entries.push((key, value.as_raw_cow()));
        }
        Ok(Self { entries })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_ref())
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k == key)
    }

    /// Remove an entry, keeping the order of the others.
    pub fn take(&mut self, key: &str) -> Option<Cow<'a, str>> {
        let index = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(index).1)
    }

    /// Set an entry's raw value, appending it when the key is new. A key the object repeats is
    /// left with the one value set: readers differ on which of two values they take.
    pub fn set(&mut self, key: impl Into<Cow<'a, str>>, raw: impl Into<Cow<'a, str>>) {
        let key = key.into();
        let Some(at) = self.entries.iter().position(|(k, _)| *k == key) else {
            self.entries.push((key, raw.into()));
            return;
        };
        self.entries[at].1 = raw.into();
        if self.entries[at + 1..].iter().any(|(k, _)| *k == key) {
            let later = self.entries.split_off(at + 1);
            self.entries.extend(later.into_iter().filter(|(k, _)| *k != key));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn to_json(&self) -> String {
        object_of(self.entries.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
    }

    /// Write the object's JSON to `out`.
    pub fn push_json(&self, out: &mut String) {
        push_object(out, self.entries.iter().map(|(k, v)| (k.as_ref(), v.as_ref())));
    }
}

/// A JSON object from keys and raw values.
pub fn object_of<'a>(entries: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> String {
    let size: usize = entries.clone().map(|(k, v)| k.len() + v.len() + 4).sum();
    let mut out = String::with_capacity(size + 2);
    push_object(&mut out, entries);
    out
}

/// Write a JSON object from keys and raw values to `out`.
fn push_object<'a>(out: &mut String, entries: impl Iterator<Item = (&'a str, &'a str)>) {
    out.push('{');
    for (index, (key, value)) in entries.enumerate() {
        if index > 0 {
            out.push(',');
        }
        push_key(out, key);
        out.push_str(value);
    }
    out.push('}');
}

/// Write `"key":`, escaping the key as JSON requires.
pub fn push_key(out: &mut String, key: &str) {
    push_string(out, key);
    out.push(':');
}

/// Write a JSON string literal.
pub fn push_string(out: &mut String, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        out.push_str(&sonic_rs::to_string(text).unwrap_or_default());
    }
}

pub fn string_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    push_string(&mut out, text);
    out
}

/// Append entries to the text of a JSON object (`additions` hold raw values).
pub fn append_entries<V: AsRef<str>>(object: &str, additions: &[(&str, V)]) -> String {
    let trimmed = object.trim_end();
    let body = trimmed.strip_suffix('}').unwrap_or(trimmed);
    let empty = body
        .trim_start()
        .strip_prefix('{')
        .is_some_and(|inside| inside.trim().is_empty());
    let extra: usize = additions.iter().map(|(k, v)| k.len() + v.as_ref().len() + 4).sum();
    let mut out = String::with_capacity(body.len() + extra + 1);
    out.push_str(body);
    for (index, (key, value)) in additions.iter().enumerate() {
        if index > 0 || !empty {
            out.push(',');
        }
        push_key(&mut out, key);
        out.push_str(value.as_ref());
    }
    out.push('}');
    out
}

/// Where `part`, a slice of `text` (a raw value `RawObject::parse` borrowed), starts in it.
pub fn offset_in(text: &str, part: &str) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    (start + part.len() <= text.len() && text.is_char_boundary(start)).then_some(start)
}

/// The bytes of the entry `key` whose value is `value` (a range of `text`, an object's entry),
/// with the comma that joins it to the others, so that cutting them out leaves the object
/// without it; `None` when its key is written with escapes.
pub fn entry_around(text: &str, key: &str, value: std::ops::Range<usize>) -> Option<std::ops::Range<usize>> {
    let before_key = text
        .get(..value.start)?
        .trim_end()
        .strip_suffix(':')?
        .trim_end()
        .strip_suffix('"')?
        .strip_suffix(key)?
        .strip_suffix('"')?;
    let head = before_key.trim_end();
    if let Some(joined) = head.strip_suffix(',') {
        return Some(joined.len()..value.end);
    }
    if !head.ends_with('{') {
        return None;
    }
    let after = text.get(value.end..)?;
    let rest = after.trim_start();
    let rest = rest.strip_prefix(',').map_or(after, str::trim_start);
    Some(before_key.len()..text.len() - rest.len())
}

/// `text` with each range replaced; ranges must not overlap.
pub fn splice(text: &str, mut replacements: Vec<(std::ops::Range<usize>, String)>) -> String {
    replacements.sort_by_key(|(range, _)| range.start);
    let extra: usize = replacements.iter().map(|(_, with)| with.len()).sum();
    let mut out = String::with_capacity(text.len() + extra);
    let mut done = 0;
    for (range, with) in replacements {
        out.push_str(&text[done..range.start]);
        out.push_str(&with);
        done = range.end;
    }
    out.push_str(&text[done..]);
    out
}

/// The text of a JSON string value, unescaped; `None` when the raw value is not a string.
pub fn as_str(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.starts_with('"') {
        return None;
    }
    let inner = &raw[1..raw.len().saturating_sub(1)];
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    sonic_rs::from_str::<String>(raw).ok().map(Cow::Owned)
}

/// Parse a raw value (already validated) into a `sonic_rs::Value`.
pub fn value(raw: &str) -> Result<sonic_rs::Value> {
    sonic_rs::from_str(raw).map_err(|err| invalid(&err))
}

/// `null`, once whitespace is ignored.
pub fn is_null(raw: &str) -> bool {
    raw.trim() == "null"
}

#[cfg(test)]
#[path = "rawjson_tests.rs"]
mod tests;
