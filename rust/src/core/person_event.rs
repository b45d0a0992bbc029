//! What one event asks of persons and groups, read from its final properties: the property
//! update (with PostHog's initial and UTM properties), the identity operation, the groups it
//! names and, for `$groupidentify`, the group update. Read while decoding, outside the store's
//! lock, so the commit only applies it.

use std::borrow::Cow;

use sonic_rs::JsonValueTrait;

use super::person::PropertyUpdate;
use super::rawjson::{self, RawObject};

/// Properties PostHog copies into the person: the value into `$set`, the first value seen into
/// `$set_once` as `$initial_<name>` (`person-property-utils.ts`). Their index into
/// `INITIAL_NAMES`.
fn initial_property(key: &str) -> Option<usize> {
    Some(match key {
        "$app_build" => 0,
        "$app_name" => 1,
        "$app_namespace" => 2,
        "$app_version" => 3,
        "$browser" => 4,
        "$browser_version" => 5,
        "$device_type" => 6,
        "$current_url" => 7,
        "$pathname" => 8,
        "$os" => 9,
        "$os_name" => 10,
        "$os_version" => 11,
        "$referring_domain" => 12,
        "$referrer" => 13,
        "$screen_height" => 14,
        "$screen_width" => 15,
        "$viewport_height" => 16,
        "$viewport_width" => 17,
        "$raw_user_agent" => 18,
        "utm_source" => 19,
        "utm_medium" => 20,
        "utm_campaign" => 21,
        "utm_content" => 22,
        "utm_name" => 23,
        "utm_term" => 24,
        "gclid" => 25,
        "gad_source" => 26,
        "gclsrc" => 27,
        "dclid" => 28,
        "gbraid" => 29,
        "wbraid" => 30,
        "fbclid" => 31,
        "msclkid" => 32,
        "twclid" => 33,
        "li_fat_id" => 34,
        "mc_cid" => 35,
        "igshid" => 36,
        "ttclid" => 37,
        "rdt_cid" => 38,
        "irclid" => 39,
        "_kx" => 40,
        "epik" => 41,
        "qclid" => 42,
        "sccid" => 43,
        _ => return None,
    })
}

/// `$initial_<name>` of each property `initial_property` knows, `$` left out of the name.
const INITIAL_NAMES: [&str; 44] = [
    "$initial_app_build",
    "$initial_app_name",
    "$initial_app_namespace",
    "$initial_app_version",
    "$initial_browser",
    "$initial_browser_version",
    "$initial_device_type",
    "$initial_current_url",
    "$initial_pathname",
    "$initial_os",
    "$initial_os_name",
    "$initial_os_version",
    "$initial_referring_domain",
    "$initial_referrer",
    "$initial_screen_height",
    "$initial_screen_width",
    "$initial_viewport_height",
    "$initial_viewport_width",
    "$initial_raw_user_agent",
    "$initial_utm_source",
    "$initial_utm_medium",
    "$initial_utm_campaign",
    "$initial_utm_content",
    "$initial_utm_name",
    "$initial_utm_term",
    "$initial_gclid",
    "$initial_gad_source",
    "$initial_gclsrc",
    "$initial_dclid",
    "$initial_gbraid",
    "$initial_wbraid",
    "$initial_fbclid",
    "$initial_msclkid",
    "$initial_twclid",
    "$initial_li_fat_id",
    "$initial_mc_cid",
    "$initial_igshid",
    "$initial_ttclid",
    "$initial_rdt_cid",
    "$initial_irclid",
    "$initial__kx",
    "$initial_epik",
    "$initial_qclid",
    "$initial_sccid",
];

/// Events whose properties are not a page view's: no initial properties are derived from them.
const NO_INITIAL_PROPERTIES: [&str; 3] = ["$snapshot", "$snapshot_items", "$performance_event"];

/// PostHog's longest group type and group key.
const MAX_GROUP_CHARS: usize = 400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    /// `$identify` with `$anon_distinct_id`.
    Identify,
    /// `$create_alias` with `alias`.
    Alias,
    /// `$merge_dangerously` with `alias`: merges even an identified person.
    MergeDangerously,
}

/// Link the event's distinct id (the one merged into) with another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityOp {
    pub kind: IdentityKind,
    pub other: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupIdentify {
    pub group_type: String,
    pub group_key: String,
    /// `$group_set`: key, raw JSON value.
    pub set: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PersonMode {
    /// The event resolves to a person, creating or updating it.
    #[default]
    Full,
    /// `$process_person_profile: false`: the event reads the person but never writes it.
    Personless,
    /// The event has no person (`$groupidentify`).
    Without,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersonEvent {
    pub mode: PersonMode,
    pub update: PropertyUpdate,
    pub identity: Option<IdentityOp>,
    /// `$groups`: group type, group key.
    pub groups: Vec<(String, String)>,
    pub group_identify: Option<GroupIdentify>,
}

fn text(raw: &str) -> Option<String> {
    if rawjson::is_null(raw) {
        return None;
    }
    let text = rawjson::as_str(raw).map_or_else(|| raw.trim().to_owned(), Cow::into_owned);
    (!text.is_empty()).then_some(text)
}

fn entries(raw: &str) -> Vec<(String, String)> {
    RawObject::parse(raw)
        .map(|object| {
            object
                .entries
                .into_iter()
                .map(|(key, value)| (key.into_owned(), value.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// `$unset`: an array of keys, the keys of an object, or one key.
fn unset_keys(raw: &str) -> Vec<String> {
    let raw = raw.trim();
    if raw.starts_with('{') {
        return entries(raw).into_iter().map(|(key, _)| key).collect();
    }
    if raw.starts_with('[') {
        return sonic_rs::from_str::<Vec<sonic_rs::Value>>(raw)
            .map(|keys| keys.iter().filter_map(|key| key.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
    }
    rawjson::as_str(raw).map(Cow::into_owned).into_iter().collect()
}

impl PersonEvent {
    /// Read an event's person and group operations from its (final) properties text.
    pub fn read(event: &str, properties: &str) -> Self {
        let mut out = Self::default();
        let Ok(object) = RawObject::parse(properties) else {
            return out;
        };
        let get = |key: &str| object.get(key).filter(|raw| !rawjson::is_null(raw));
        if event == "$groupidentify" {
            out.mode = PersonMode::Without;
            let group_type = get("$group_type").and_then(text);
            let group_key = get("$group_key").and_then(text);
            if let (Some(group_type), Some(group_key)) = (group_type, group_key) {
                if group_type.chars().count() <= MAX_GROUP_CHARS && group_key.chars().count() <= MAX_GROUP_CHARS {
                    let set = get("$group_set").map(entries).unwrap_or_default();
                    out.group_identify = Some(GroupIdentify {
                        group_type,
                        group_key,
                        set,
                    });
                }
            }
        } else if get("$process_person_profile").is_some_and(|raw| raw.trim() == "false") {
            out.mode = PersonMode::Personless;
        }
        if let Some(groups) = get("$groups") {
            out.groups = entries(groups)
                .into_iter()
                .filter_map(|(group_type, raw)| Some((group_type, text(&raw)?)))
                .collect();
        }
        if let Some(group) = &out.group_identify {
            if !out.groups.iter().any(|(group_type, _)| *group_type == group.group_type) {
                out.groups.push((group.group_type.clone(), group.group_key.clone()));
            }
        }
        if out.mode != PersonMode::Full {
            return out;
        }

        let update = &mut out.update;
        let object_entries = |raw| RawObject::parse(raw).map(|object| object.entries).unwrap_or_default();
        // The initial properties' values usually go in twice, besides `$set` and `$set_once`.
        update.reserve(
            ["$set", "$set_once"]
                .map(|key| get(key).map_or(0, str::len))
                .iter()
                .sum::<usize>()
                + 2048,
        );
        let set = get("$set").map(object_entries).unwrap_or_default();
        let set_once = get("$set_once").map(object_entries).unwrap_or_default();
        for (key, value) in &set {
            update.push_set(key, value);
        }
        for (key, value) in &set_once {
            update.push_set_once(key, value);
        }
        for key in get("$unset").map(unset_keys).unwrap_or_default() {
            update.push_unset(&key);
        }
        if !NO_INITIAL_PROPERTIES.contains(&event) {
            let is_server = get("$is_server").is_some_and(|raw| raw.trim() == "true");
            // Only a key's first use can add anything: a bit per known property marks it used,
            // so properties that repeat a key many times stay linear to read.
            let (mut seen_set, mut seen_once) = (0u64, 0u64);
            for (key, value) in &object.entries {
                let Some(index) = initial_property(key) else {
                    continue;
                };
                if is_server && matches!(key.as_ref(), "$os" | "$os_version") {
                    continue;
                }
                let bit = 1u64 << index;
                // Each name is added once, so it only has to be looked for among `$set`'s own.
                if seen_set & bit == 0 {
                    seen_set |= bit;
                    if !set.iter().any(|(known, _)| known == key) {
                        update.push_set(key, value);
                    }
                }
                if seen_once & bit == 0 && !rawjson::is_null(value) {
                    seen_once |= bit;
                    let initial = INITIAL_NAMES[index];
                    if !set_once.iter().any(|(known, _)| known == initial) {
                        update.push_set_once(initial, value);
                    }
                }
            }
        }

        update.seal();

        let other = |key: &str| get(key).and_then(text);
        out.identity = match event {
            "$identify" => other("$anon_distinct_id").map(|other| IdentityOp {
                kind: IdentityKind::Identify,
                other,
            }),
            "$create_alias" => other("alias").map(|other| IdentityOp {
                kind: IdentityKind::Alias,
                other,
            }),
            "$merge_dangerously" => other("alias").map(|other| IdentityOp {
                kind: IdentityKind::MergeDangerously,
                other,
            }),
            _ => None,
        };
        out
    }
}

/// Distinct ids PostHog never merges on: values SDKs and integrations send by mistake instead of a real id.
pub fn is_illegal_merge_id(id: &str) -> bool {
    const ANY_CASE: [&str; 10] = [
        "anonymous",
        "guest",
        "distinctid",
        "distinct_id",
        "id",
        "not_authenticated",
        "email",
        "undefined",
        "true",
        "false",
    ];
    const EXACT: [&str; 7] = ["[object Object]", "NaN", "None", "none", "null", "0", "undefined"];
    let trimmed = id.trim();
    if trimmed.is_empty() {
        return true;
    }
    let bare = [('"', '"'), ('\'', '\'')]
        .iter()
        .find_map(|(open, close)| trimmed.strip_prefix(*open)?.strip_suffix(*close))
        .unwrap_or(trimmed);
    ANY_CASE.iter().any(|illegal| bare.eq_ignore_ascii_case(illegal)) || EXACT.contains(&bare)
}

#[cfg(test)]
#[path = "person_event_tests.rs"]
mod tests;
