//! An event's properties on the way in: the few keys processing reads, found in one pass, and
//! the edits hogflare makes (additions spliced onto the SDK's text, merges when both the event
//! and its properties carry a `$set`).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use sonic_rs::{JsonContainerTrait, JsonType, JsonValueTrait, Value};

use super::enrich::Entries;
use super::event_fields::is_truthy;
use super::geoip;
use super::person_event::unset_keys;
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
    /// The event's own address: it is located instead of the request's.
    pub ip: Option<&'v Value>,
    pub process_person_profile: Option<&'v Value>,
    pub cookieless_mode: Option<&'v Value>,
    /// `$os_name`, which some SDKs send instead of `$os`, unless `$os` is there too.
    pub os_name_only: Option<&'v Value>,
    present: u16,
    /// Whether the event carries any of `$group_0`…`$group_4`.
    group_columns: bool,
    /// Which of `geoip::FIELDS` the event carries.
    geoip_present: u16,
}

const WATCHED: [&str; 11] = [
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
];

/// The properties PostHog's group step writes an event's group keys to, one per slot.
pub(super) const GROUP_COLUMNS: [&str; 5] = ["$group_0", "$group_1", "$group_2", "$group_3", "$group_4"];

fn is_group_column(key: &str) -> bool {
    key.len() == 8 && key.starts_with("$group_") && matches!(key.as_bytes()[7], b'0'..=b'4')
}

/// The bit of a `$geoip_*` property in `Known::geoip_present`.
fn geoip_bit(key: &str) -> Option<u16> {
    if !key.starts_with("$geoip_") {
        return None;
    }
    geoip::FIELDS
        .iter()
        .position(|field| field.property == key)
        .map(|index| 1 << index)
}

impl<'v> Known<'v> {
    pub fn scan(properties: &'v Value) -> Self {
        let mut known = Self::default();
        let Some(object) = properties.as_object() else {
            return known;
        };
        let mut has_os = false;
        for (key, value) in object {
            match key {
                "$os" => has_os = true,
                "$os_name" => known.os_name_only = Some(value),
                "distinct_id" => known.distinct_id = Some(value),
                "$distinct_id" => known.dollar_distinct_id = Some(value),
                "token" => known.token = Some(value),
                "$ignore_sent_at" => known.ignore_sent_at = Some(value),
                "capture_internal" => known.capture_internal = Some(value),
                "$geoip_disable" => known.geoip_disable = Some(value),
                "$cookieless_mode" => known.cookieless_mode = Some(value),
                // The first, as the person work reads it from the final text.
                "$process_person_profile" => {
                    known.process_person_profile.get_or_insert(value);
                }
                _ => {
                    if is_group_column(key) {
                        known.group_columns = true;
                    } else if let Some(bit) = geoip_bit(key) {
                        known.geoip_present |= bit;
                    } else if let Some(bit) = WATCHED.iter().position(|watched| *watched == key) {
                        known.present |= 1 << bit;
                        if key == "$ip" {
                            known.ip = Some(value);
                        }
                    }
                }
            }
        }
        if has_os
            || known
                .os_name_only
                .is_some_and(|value| value.is_null() || value.as_str() == Some(""))
        {
            known.os_name_only = None;
        }
        known
    }

    /// The address the event names itself: an empty or `null` `$ip` names none, and PostHog
    /// puts the request's in its place.
    pub fn own_ip(&self) -> Option<&'v Value> {
        self.ip.filter(|ip| is_truthy(Some(ip)))
    }

    pub fn has(&self, key: &str) -> bool {
        if is_group_column(key) {
            return self.group_columns;
        }
        if let Some(bit) = geoip_bit(key) {
            return self.geoip_present & bit != 0;
        }
        WATCHED
            .iter()
            .position(|watched| *watched == key)
            .is_some_and(|bit| self.present & (1 << bit) != 0)
    }
}

/// PostHog's longest group key; its ingestion discards a `$groupidentify` with a longer one.
const MAX_GROUP_KEY_CHARS: usize = 400;

/// Whether PostHog's ingestion discards this `$groupidentify` (after its capture said ok): a
/// group key over 400 characters as JavaScript counts them (`group_key_too_long`), or a
/// `$group_set` that is not an object (`invalid_group_set`).
pub(super) fn group_identify_discarded(properties: &Value) -> bool {
    let set = properties.get("$group_set");
    properties.get("$group_key").is_some_and(key_too_long) || set.is_some_and(|set| !set.is_null() && !set.is_object())
}

/// Whether a group key given as raw JSON is longer than PostHog keeps.
pub(super) fn group_key_too_long(raw: &str) -> bool {
    sonic_rs::from_str::<Value>(raw).is_ok_and(|key| key_too_long(&key))
}

fn key_too_long(key: &Value) -> bool {
    let chars = match key.get_type() {
        JsonType::String => key.as_str().map(|text| text.encode_utf16().count()),
        JsonType::Number => sonic_rs::to_string(key).ok().map(|text| text.len()),
        _ => None,
    };
    chars.is_some_and(|chars| chars > MAX_GROUP_KEY_CHARS)
}

/// How the properties of an event are changed on the way in.
pub(super) struct PropertyEdits<'a> {
    /// Entries to add when absent: key, raw JSON value.
    pub append: Vec<(&'static str, String)>,
    /// Entries to merge into an object (or, for `$unset`, a list) already in the properties.
    pub merge: Vec<(&'static str, Cow<'a, str>)>,
    /// Entries for an object such as `$set`, each added only where the event does not have it.
    pub defaults: Vec<(&'static str, Entries)>,
    /// Entries that take the place of a value the client sent (an empty `$ip`).
    replace: Vec<(&'static str, String)>,
    /// Keys removed from the properties, whatever else would add them.
    strip: &'static [&'static str],
}

impl<'a> PropertyEdits<'a> {
    pub fn new() -> Self {
        Self {
            append: Vec::new(),
            merge: Vec::new(),
            defaults: Vec::new(),
            replace: Vec::new(),
            strip: &[],
        }
    }

    /// Remove `keys` from the properties; edits of them are dropped.
    pub fn strip(&mut self, keys: &'static [&'static str]) {
        self.strip = keys;
    }

    pub fn add(&mut self, known: &Known<'_>, key: &'static str, raw: String) {
        if !known.has(key) && !self.append.iter().any(|(k, _)| *k == key) {
            self.append.push((key, raw));
        }
    }

    /// `key` set to `raw` whether the properties have it or not.
    pub fn replace(&mut self, key: &'static str, raw: String) {
        self.replace.push((key, raw));
    }

    /// Entries for the object under `key` (`$set`, `$set_once`) that lose to what the client sent,
    /// and to the defaults given for `key` before (one list per key: `finish` splices each
    /// key's value once).
    pub fn defaults(&mut self, key: &'static str, entries: Entries) {
        if entries.is_empty() {
            return;
        }
        match self.defaults.iter_mut().find(|(k, _)| *k == key) {
            Some((_, earlier)) => {
                let new = entries
                    .iter()
                    .filter(|(name, _)| !earlier.iter().any(|(held, _)| held == name));
                *earlier = earlier.iter().chain(new).cloned().collect();
            }
            None => self.defaults.push((key, entries)),
        }
    }

    /// The edited properties; `None` when properties that must be parsed are not an object.
    /// Without merges the SDK's text is kept byte for byte and the edits are spliced into it.
    pub fn finish(mut self, known: &Known<'_>, properties: Cow<'_, str>) -> Option<String> {
        let strip = self.strip;
        self.append.retain(|(key, _)| !strip.contains(key));
        self.merge.retain(|(key, _)| !strip.contains(key));
        self.defaults.retain(|(key, _)| !strip.contains(key));
        self.replace.retain(|(key, _)| !strip.contains(key));
        let stripping = strip.iter().any(|key| known.has(key));
        let mut nested = Vec::new();
        for (key, entries) in std::mem::take(&mut self.defaults) {
            if let Some((_, raw)) = self.append.iter_mut().find(|(k, _)| *k == key) {
                if let Some(with) = with_defaults(raw, &entries) {
                    *raw = with;
                }
            } else if known.has(key) {
                nested.push((key, entries));
            } else {
                self.append.push((key, object_of(&entries)));
            }
        }
        if self.merge.is_empty() && self.replace.is_empty() && !stripping {
            let append = |text: &str| rawjson::append_entries(text, &self.append);
            if nested.is_empty() {
                return Some(if self.append.is_empty() {
                    properties.into_owned()
                } else {
                    append(&properties)
                });
            }
            if let Some(spliced) = splice_defaults(&properties, &nested) {
                return Some(if self.append.is_empty() {
                    spliced
                } else {
                    append(&spliced)
                });
            }
        }
        let mut object = RawObject::parse(&properties).ok()?;
        object.entries.retain(|(key, _)| !strip.contains(&key.as_ref()));
        for (key, top) in &self.merge {
            let merged = merge_raw(key, object.get(key).unwrap_or("{}"), top);
            object.set(*key, merged);
        }
        for (key, raw) in self.append.into_iter().chain(self.replace) {
            object.set(key, raw);
        }
        for (key, entries) in &nested {
            let with = object
                .get(key)
                .map_or_else(|| Some(object_of(entries)), |raw| with_defaults(raw, entries));
            if let Some(with) = with {
                object.set(*key, with);
            }
        }
        Some(object.to_json())
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

fn object_of(entries: &[(&'static str, String)]) -> String {
    rawjson::object_of(entries.iter().map(|(key, raw)| (*key, raw.as_str())))
}

/// `existing` with the entries it lacks spliced on; `None` when nothing changes or it is
/// neither an object nor `null`.
fn with_defaults(existing: &str, entries: &[(&'static str, String)]) -> Option<String> {
    if rawjson::is_null(existing) {
        return Some(object_of(entries));
    }
    let object = RawObject::parse(existing).ok()?;
    let missing: Vec<(&str, &str)> = entries
        .iter()
        .filter(|(key, _)| !object.contains(key))
        .map(|(key, raw)| (*key, raw.as_str()))
        .collect();
    (!missing.is_empty()).then(|| rawjson::append_entries(existing, &missing))
}

/// Defaults spliced into objects the properties already hold, leaving every other byte as it
/// was; `None` when a value cannot be found in the text (the caller then rebuilds the object).
fn splice_defaults(properties: &str, nested: &[(&'static str, Entries)]) -> Option<String> {
    let mut replacements = Vec::with_capacity(nested.len());
    for (key, entries) in nested {
        let Cow::Borrowed(existing) = sonic_rs::get(properties, [*key]).ok()?.as_raw_cow() else {
            return None;
        };
        if let Some(with) = with_defaults(existing, entries) {
            let start = rawjson::offset_in(properties, existing)?;
            replacements.push((start..start + existing.len(), with));
        }
    }
    Some(rawjson::splice(properties, replacements))
}

/// Merge two raw objects (`top` wins), or two `$unset` lists; for anything else `top` wins.
pub(super) fn merge_raw(key: &str, existing: &str, top: &str) -> String {
    // Both merges look keys up in a set: a `$set` of many keys must not cost their square.
    if key == "$unset" {
        let mut keys = unset_keys(existing);
        let mut seen: HashSet<String> = keys.iter().cloned().collect();
        for key in unset_keys(top) {
            if seen.insert(key.clone()) {
                keys.push(key);
            }
        }
        return sonic_rs::to_string(&keys).unwrap_or_default();
    }
    match (RawObject::parse(existing), RawObject::parse(top)) {
        (Ok(mut into), Ok(from)) => {
            let mut at: HashMap<Cow<'_, str>, usize> = HashMap::with_capacity(into.entries.len());
            for (index, (name, _)) in into.entries.iter().enumerate() {
                at.entry(name.clone()).or_insert(index);
            }
            for (name, value) in from.entries {
                if let Some(&index) = at.get(&name) {
                    into.entries[index].1 = value;
                } else {
                    at.insert(name.clone(), into.entries.len());
                    into.entries.push((name, value));
                }
            }
            into.to_json()
        }
        _ => top.to_owned(),
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

/// The properties of an event made personless after it was decoded, as PostHog re-normalises
/// one: without `$set`, `$set_once`, `$unset` and group columns, and with
/// `$process_person_profile: false`.
/// `None` when they are not an object.
pub(super) fn made_personless(properties: &str) -> Option<String> {
    let mut object = RawObject::parse(properties).ok()?;
    object
        .entries
        .retain(|(key, _)| !matches!(key.as_ref(), "$set" | "$set_once" | "$unset") && !is_group_column(key));
    object.set("$process_person_profile", "false");
    Some(object.to_json())
}

#[cfg(test)]
#[path = "properties_tests.rs"]
mod tests;
