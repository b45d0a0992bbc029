//! The entries of a JSON object whose text is already known to be valid, found by looking only
//! at the bytes that delimit them: quotes and backslashes inside strings, and inside a nested
//! value only its own kind of bracket. A general parser checks every byte of every value it
//! skips; an event's final properties were checked when the request was parsed, and reading its
//! person update from them skips most of their bytes.
//!
//! On text that is not valid JSON the result is unspecified but safe: entries may be wrong or
//! missing, and the scan never panics or reads past the text.

use std::borrow::Cow;

use super::rawjson;

/// The text is not an object, or not one the scan can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Decoded key and raw value text of each entry, in order.
pub struct Entries<'a> {
    text: &'a str,
    at: usize,
    first: bool,
    done: bool,
}

/// The entries of `text`, which must be a valid JSON value; `Err` when it is not an object.
pub fn entries_of_valid(text: &str) -> Result<Entries<'_>, Malformed> {
    let at = skip_whitespace(text.as_bytes(), 0);
    if text.as_bytes().get(at) != Some(&b'{') {
        return Err(Malformed);
    }
    Ok(Entries {
        text,
        at: at + 1,
        first: true,
        done: false,
    })
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(Cow<'a, str>, &'a str), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let entry = self.entry();
        if !matches!(entry, Some(Ok(_))) {
            self.done = true;
        }
        entry
    }
}

impl<'a> Entries<'a> {
    fn entry(&mut self) -> Option<Result<(Cow<'a, str>, &'a str), Malformed>> {
        let bytes = self.text.as_bytes();
        let key_start = skip_whitespace(bytes, self.at);
        if self.first && bytes.get(key_start) == Some(&b'}') {
            return None;
        }
        self.first = false;
        let read = || -> Option<(Cow<'a, str>, &'a str, usize)> {
            let (key, value_start) = key_at(self.text, key_start)?;
            let value_end = value_end(bytes, value_start)?;
            let value = self.text.get(value_start..value_end)?;
            Some((key, value, skip_whitespace(bytes, value_end)))
        };
        let Some((key, value, after)) = read() else {
            return Some(Err(Malformed));
        };
        match bytes.get(after) {
            Some(b',') => self.at = after + 1,
            Some(b'}') => self.done = true,
            _ => return Some(Err(Malformed)),
        }
        Some(Ok((key, value)))
    }
}

/// The decoded key of the entry whose key opens at `key_start`, and where its value starts.
// Inlined into the entries' iteration, the person update's read of every event, where a call
// of its own cost about 1.5k instructions a pageview.
#[allow(clippy::inline_always)]
#[inline(always)]
fn key_at(text: &str, key_start: usize) -> Option<(Cow<'_, str>, usize)> {
    let bytes = text.as_bytes();
    if bytes.get(key_start) != Some(&b'"') {
        return None;
    }
    let (key_end, escaped) = string_end(bytes, key_start)?;
    let key = text.get(key_start..key_end)?;
    let key = if escaped {
        rawjson::as_str(key)?
    } else {
        Cow::Borrowed(key.get(1..key.len() - 1)?)
    };
    let colon = skip_whitespace(bytes, key_end);
    if bytes.get(colon) != Some(&b':') {
        return None;
    }
    Some((key, skip_whitespace(bytes, colon + 1)))
}

/// Where the value of the first entry named `wanted` starts in `text`, a valid JSON object,
/// without finding where that value ends: the entries before it are stepped over, and the
/// value itself, a `/batch` body's whole `batch` array, is left for the caller to read once.
pub fn value_start(text: &str, wanted: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut at = skip_whitespace(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    loop {
        let (key, value_start) = key_at(text, skip_whitespace(bytes, at + 1))?;
        if key == wanted {
            return Some(value_start);
        }
        at = skip_whitespace(bytes, value_end(bytes, value_start)?);
        if bytes.get(at) != Some(&b',') {
            return None;
        }
    }
}

fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(at) {
        at += 1;
    }
    at
}

/// Just past the closing quote of the string that opens at `open`, and whether it holds escapes.
pub(crate) fn string_end(bytes: &[u8], open: usize) -> Option<(usize, bool)> {
    let mut at = open + 1;
    let mut escaped = false;
    loop {
        let found = at + memchr::memchr2(b'"', b'\\', bytes.get(at..)?)?;
        if bytes[found] == b'"' {
            return Some((found + 1, escaped));
        }
        // The byte after a backslash never ends the string.
        escaped = true;
        at = found + 2;
    }
}

/// Just past the bracket that closes the array or object opening at `at`. In valid JSON the
/// brackets of one kind nest by themselves, so the other kind can be ignored.
fn container_end(bytes: &[u8], open_at: usize, open: u8, close: u8) -> Option<usize> {
    let mut depth = 0usize;
    let mut at = open_at;
    loop {
        let found = at + memchr::memchr3(b'"', open, close, bytes.get(at..)?)?;
        at = match bytes[found] {
            b'"' => string_end(bytes, found)?.0,
            byte if byte == open => {
                depth += 1;
                found + 1
            }
            _ => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(found + 1);
                }
                found + 1
            }
        };
    }
}

/// Just past the value that starts at `at`.
fn value_end(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'"' => string_end(bytes, at).map(|(end, _)| end),
        b'{' => container_end(bytes, at, b'{', b'}'),
        b'[' => container_end(bytes, at, b'[', b']'),
        _ => {
            // A number, `true`, `false` or `null`: up to what may follow a value.
            let length = bytes[at..]
                .iter()
                .position(|byte| matches!(byte, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(bytes.len() - at);
            (length > 0).then_some(at + length)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What sonic-rs's checking iterator reads from the same text.
    fn by_sonic(text: &str) -> Option<Vec<(String, String)>> {
        sonic_rs::to_object_iter(text)
            .map(|entry| {
                entry
                    .ok()
                    .map(|(key, value)| (key.into_owned(), value.as_raw_str().to_owned()))
            })
            .collect()
    }

    fn by_scan(text: &str) -> Option<Vec<(String, String)>> {
        entries_of_valid(text)
            .ok()?
            .map(|entry| entry.ok().map(|(key, value)| (key.into_owned(), value.to_owned())))
            .collect()
    }

    #[test]
    fn reads_what_a_checking_parser_reads() {
        let cases = [
            "{}",
            " { } ",
            r#"{"a":1}"#,
            r#"{ "a" : 1 , "b" : "x" }"#,
            "{\n\t\"a\":\r\n-1.5e+3,\"b\":true,\"c\":false,\"d\":null}",
            r#"{"$set":{"x":{"y":[1,{"z":"}"}]}},"after":"]"}"#,
            r#"{"s":"quote \" and backslash \\","t":"\\","u":"\\\""}"#,
            r#"{"esc\"aped\nkey":1,"\u00e9":"\u00e9","é":"ü 😀"}"#,
            r#"{"arr":[[],[[]],["[","]"],{"k":"{"}],"obj":{"a":{},"b":{"c":{}}}}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"n":12345678901234567890123,"m":0,"e":1E-7}"#,
            r#"{"lone \ud800 surrogate":1,"v":"\udc00"}"#,
        ];
        for case in cases {
            assert_eq!(by_scan(case), by_sonic(case), "{case}");
        }
    }

    /// Every object in the final properties of the events the SDKs' recorded requests decode
    /// to: the text the scan reads in production.
    #[test]
    fn recorded_sdk_events_read_alike() {
        use crate::core::decode::{decode, route_for_path, DecoderConfig, HeaderFacts};
        use crate::core::request::RequestParts;
        use sonic_rs::{JsonContainerTrait, JsonValueTrait};

        fn objects_in(value: &sonic_rs::Value, out: &mut Vec<String>) {
            if let Some(object) = value.as_object() {
                out.push(sonic_rs::to_string(value).unwrap());
                object.iter().for_each(|(_, value)| objects_in(value, out));
            } else if let Some(array) = value.as_array() {
                array.iter().for_each(|value| objects_in(value, out));
            }
        }
        let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
        let expected: sonic_rs::Value =
            sonic_rs::from_str(&std::fs::read_to_string(format!("{dir}/expected.json")).unwrap()).unwrap();
        let config = DecoderConfig::default();
        let mut read = 0;
        for (name, _) in expected.as_object().unwrap() {
            let meta: sonic_rs::Value =
                sonic_rs::from_str(&std::fs::read_to_string(format!("{dir}/{name}.json")).unwrap()).unwrap();
            let body = std::fs::read(format!("{dir}/{name}.body")).unwrap();
            let parts = RequestParts {
                route: route_for_path(meta["path"].as_str().unwrap()).unwrap(),
                body: &body,
                query: meta["query"].as_str().unwrap().as_bytes(),
                content_type: meta["headers"]["content-type"].as_str(),
                content_encoding: meta["headers"]["content-encoding"].as_str(),
            };
            let decoded = decode(&parts, HeaderFacts::default(), &config, chrono::Utc::now()).unwrap();
            for event in decoded.events {
                assert_eq!(by_scan(&event.properties), by_sonic(&event.properties), "{name}");
                let mut nested = Vec::new();
                objects_in(&sonic_rs::from_str(&event.properties).unwrap(), &mut nested);
                for object in nested {
                    assert_eq!(by_scan(&object), by_sonic(&object), "{name}");
                }
                read += 1;
            }
        }
        assert!(read > 10, "{read} events");
    }

    #[test]
    fn a_value_is_found_where_a_checking_parser_finds_it() {
        let cases = [
            r#"{"batch":[1]}"#,
            r#"{ "api_key" : "k" , "batch" : [ {"batch":2} ] , "sent_at" : "t" }"#,
            r#"{"data":{"batch":[]},"b\u0061tch":[3],"batch":[4]}"#,
            r#"{"batch":[5],"batch":[6]}"#,
            r#"{"s":"\"batch\": [7]","batch":{}}"#,
        ];
        for case in cases {
            let start = value_start(case, "batch").unwrap();
            let sonic = sonic_rs::get_from_str(case, ["batch"]).unwrap();
            assert!(case[start..].starts_with(sonic.as_raw_str()), "{case}");
            // The parsed document, whose items are read beside these, picks the same entry.
            let document: sonic_rs::Value = sonic_rs::from_str(case).unwrap();
            let parsed: sonic_rs::Value = sonic_rs::from_str(sonic.as_raw_str()).unwrap();
            assert_eq!(
                sonic_rs::JsonValueTrait::get(&document, "batch"),
                Some(&parsed),
                "{case}"
            );
        }
        for case in [
            "{}",
            r#"{"data":{"batch":[]}}"#,
            "[]",
            r#"{"a":1"#,
            r#"{"a" 1,"batch":[]}"#,
        ] {
            assert_eq!(value_start(case, "batch"), None, "{case}");
        }
    }

    #[test]
    fn anything_but_an_object_is_refused() {
        for text in ["[]", "1", "\"{}\"", "", "   ", "null"] {
            assert!(entries_of_valid(text).is_err(), "{text}");
        }
    }

    #[test]
    fn invalid_text_ends_the_scan_without_panicking() {
        let cases = [
            "{",
            "{\"",
            "{\"a",
            "{\"a\"",
            "{\"a\":",
            "{\"a\":1",
            "{\"a\":1,",
            "{\"a\":\"x",
            "{\"a\":\"x\\",
            "{\"a\":[",
            "{\"a\":{\"b\":",
            "{\"a\":}",
            "{\"a\" 1}",
            "{a:1}",
            "{\"a\":1 \"b\":2}",
            "{\"a\":]]]}",
            "{\"a\":\"\\\"}",
            "{,}",
            "{\"a\":1,}",
        ];
        for case in cases {
            let entries: Vec<_> = entries_of_valid(case).unwrap().collect();
            assert!(
                entries.iter().any(Result::is_err) || entries.is_empty(),
                "{case}: {entries:?}"
            );
        }
    }
}
