//! An event's properties on the way in: the few keys processing reads, found in one pass, and
//! the edits hogflare makes (additions spliced onto the SDK's text, merges when both the event
//! and its properties carry a `$set`).

use std::borrow::Cow;

use sonic_rs::{JsonContainerTrait, JsonType, JsonValueTrait, Value};

use super::rawjson::{self, RawObject};

/// The properties an event's processing looks at, found in one pass over the object instead of
/// one linear search each.
#[derive(Default)]
pub(super) struct Known<'v> {
    pub distinct_id: Option<&'v Value>,
    pub dollar_distinct_id: Option<&'v Value>,
    pub token: Option<&'v Value>,
    pub ignore_sent_at: Option<&'v Value>,
    pub capture_internal: Option<&'v Value>,
    pub geoip_disable: Option<&'v Value>,
    present: u16,
}

const WATCHED: [&str; 12] = [
    "$set",
    "$set_once",
    "$unset",
    "$sent_at",
    "alias",
    "$anon_distinct_id",
    "$group_type",
    "$group_key",
    "$group_set",
    "$ip",
    "cf_ray",
    "$geoip_country_code",
];

impl<'v> Known<'v> {
    pub fn scan(properties: &'v Value) -> Self {
        let mut known = Self::default();
        let Some(object) = properties.as_object() else {
            return known;
        };
        for (key, value) in object {
            match key {
                "distinct_id" => known.distinct_id = Some(value),
                "$distinct_id" => known.dollar_distinct_id = Some(value),
                "token" => known.token = Some(value),
                "$ignore_sent_at" => known.ignore_sent_at = Some(value),
                "capture_internal" => known.capture_internal = Some(value),
                "$geoip_disable" => known.geoip_disable = Some(value),
                _ => {
                    if let Some(bit) = WATCHED.iter().position(|watched| *watched == key) {
                        known.present |= 1 << bit;
                    }
                }
            }
        }
        known
    }

    pub fn has(&self, key: &str) -> bool {
        WATCHED
            .iter()
            .position(|watched| *watched == key)
            .is_some_and(|bit| self.present & (1 << bit) != 0)
    }
}

/// How the properties of an event are changed on the way in.
pub(super) struct PropertyEdits<'a> {
    /// Entries to add when absent: key, raw JSON value.
    pub append: Vec<(&'static str, String)>,
    /// Entries to merge into an object (or, for `$unset`, a list) already in the properties.
    pub merge: Vec<(&'static str, Cow<'a, str>)>,
}

impl<'a> PropertyEdits<'a> {
    pub fn new() -> Self {
        Self {
            append: Vec::new(),
            merge: Vec::new(),
        }
    }

    pub fn add(&mut self, known: &Known<'_>, key: &'static str, raw: String) {
        if !known.has(key) && !self.append.iter().any(|(k, _)| *k == key) {
            self.append.push((key, raw));
        }
    }

    /// A top-level `$set`-like field: merged into the one in properties, or added as it is.
    pub fn top_level(&mut self, known: &Known<'_>, key: &'static str, raw: Cow<'a, str>) {
        if known.has(key) {
            self.merge.push((key, raw));
        } else {
            self.add(known, key, raw.into_owned());
        }
    }
}

/// Merge two raw objects (`top` wins), or two `$unset` lists; for anything else `top` wins.
pub(super) fn merge_raw(key: &str, existing: &str, top: &str) -> String {
    if key == "$unset" {
        let mut keys: Vec<Value> = unset_keys(existing);
        for key in unset_keys(top) {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        return sonic_rs::to_string(&keys).unwrap_or_default();
    }
    match (RawObject::parse(existing), RawObject::parse(top)) {
        (Ok(mut into), Ok(from)) => {
            for (name, value) in from.entries {
                into.set(name, value);
            }
            into.to_json()
        }
        _ => top.to_owned(),
    }
}

/// `$unset` as a list of keys: an array, the keys of an object, or one string.
fn unset_keys(raw: &str) -> Vec<Value> {
    let Ok(value) = rawjson::value(raw) else {
        return Vec::new();
    };
    match value.get_type() {
        JsonType::Array => value
            .as_array()
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default(),
        JsonType::Object => value
            .as_object()
            .map(|map| map.iter().map(|(k, _)| Value::from(k)).collect())
            .unwrap_or_default(),
        JsonType::String => vec![value],
        _ => Vec::new(),
    }
}

/// The keys of an object that do not start with `$`, as a raw object (Hogflare's plain shapes).
pub(super) fn plain_keys(properties: &str, skip: &[&str]) -> String {
    let mut out = RawObject::default();
    if let Ok(object) = RawObject::parse(properties) {
        for (key, value) in object.entries {
            if !key.starts_with('$') && !skip.contains(&key.as_ref()) {
                out.entries.push((key, value));
            }
        }
    }
    out.to_json()
}
