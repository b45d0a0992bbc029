//! What one event asks of persons and groups, read from its final properties: the property
//! update (with PostHog's initial and UTM properties), the identity operation, the groups it
//! names and, for `$groupidentify`, the group update. Read while decoding, outside the store's
//! lock, so the commit only applies it.

use std::borrow::Cow;

use sonic_rs::{JsonValueTrait, Value};

use super::javascript;
use super::json_entries;
use super::person::PropertyUpdate;
use super::person_initial::{initial_property, INITIAL_NAMES, NO_INITIAL_PROPERTIES};
use super::person_update::Writes;
use super::rawjson;

/// PostHog's longest group type and group key.
const MAX_GROUP_CHARS: usize = 400;

/// The event an SDK sends when a flag is read.
const FEATURE_FLAG_CALLED: &str = "$feature_flag_called";

/// Events PostHog ingests apart from the others, reading persons but never making or changing
/// one.
pub const READ_ONLY_PERSON_EVENTS: [&str; 2] = ["$exception", "$$heatmap"];

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
    /// A session recording, a heatmap or an exception: it goes with the person its distinct id
    /// already has, and never creates or changes one (PostHog's replay, heatmap and error
    /// tracking ingestion make no persons, nor group types); without one, it is personless.
    Existing,
    /// The event has no person (hogflare's own `/groups` route, which names a group, not a
    /// person).
    Without,
    /// A `$feature_flag_called` that names no group and does not ask for person processing:
    /// `Full` when its distinct id has a person, else `Personless` (PostHog's default, so that
    /// a server's flag checks make no person of an id nothing else names).
    FullIfKnown,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersonEvent {
    pub mode: PersonMode,
    pub update: PropertyUpdate,
    pub identity: Option<IdentityOp>,
    /// `$groups`: group type, group key. A type named without a key (`null`, `""`) still takes
    /// its slot, as PostHog's group step gives every type in `$groups` one, but maps no group.
    pub groups: Vec<(String, Option<String>)>,
    pub group_identify: Option<GroupIdentify>,
}

/// A group type or key: a string as it is, any other value as its JSON text (which the `groups`
/// view reads back from the row with `json_extract_string`).
fn text(raw: &str) -> Option<String> {
    if rawjson::is_null(raw) {
        return None;
    }
    let text = rawjson::as_str(raw).map_or_else(|| raw.trim().to_owned(), Cow::into_owned);
    (!text.is_empty()).then_some(text)
}

/// The other id of an identity operation as PostHog's ingestion reads it: a string as it is, any
/// other value as JavaScript's `String()` writes it (an object is `[object Object]`, no legal id).
fn other_id(raw: &str) -> Option<String> {
    if rawjson::is_null(raw) {
        return None;
    }
    let text = match rawjson::as_str(raw) {
        Some(text) => text.into_owned(),
        None => {
            sonic_rs::from_str::<Value>(raw).map_or_else(|_| raw.trim().to_owned(), |value| javascript::string(&value))
        }
    };
    (!text.is_empty()).then_some(text)
}

/// The entries of an object among the properties (valid JSON since the request was parsed);
/// none when it is not an object, or a key cannot be read.
fn object_entries(raw: &str) -> Vec<(Cow<'_, str>, &str)> {
    json_entries::entries_of_valid(raw)
        .and_then(Iterator::collect)
        .unwrap_or_default()
}

fn owned_entries(raw: &str) -> Vec<(String, String)> {
    object_entries(raw)
        .into_iter()
        .map(|(key, value)| (key.into_owned(), value.to_owned()))
        .collect()
}

/// `$unset` as PostHog reads it, with JavaScript's `Object.keys`: an array's strings, an
/// object's keys, and a string's character positions (`"ab"` unsets `0` and `1`, not `ab`).
pub(super) fn unset_keys(raw: &str) -> Vec<String> {
    let raw = raw.trim();
    if raw.starts_with('{') {
        return object_entries(raw)
            .into_iter()
            .map(|(key, _)| key.into_owned())
            .collect();
    }
    if raw.starts_with('[') {
        return sonic_rs::from_str::<Vec<sonic_rs::Value>>(raw)
            .map(|keys| keys.iter().filter_map(|key| key.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
    }
    let positions = rawjson::as_str(raw).map_or(0, |text| text.encode_utf16().count());
    (0..positions).map(|at| at.to_string()).collect()
}

/// The properties `PersonEvent::read` looks at, each at its first occurrence as the SDK's
/// text has it (`null` included).
#[derive(Clone, Copy)]
enum Property {
    GroupType,
    GroupKey,
    GroupSet,
    ProcessPersonProfile,
    Groups,
    Set,
    SetOnce,
    Unset,
    IsServer,
    AnonDistinctId,
    Alias,
}

impl Property {
    const COUNT: usize = Self::Alias as usize + 1;

    fn of(key: &str) -> Option<Self> {
        Some(match key {
            "$group_type" => Self::GroupType,
            "$group_key" => Self::GroupKey,
            "$group_set" => Self::GroupSet,
            "$process_person_profile" => Self::ProcessPersonProfile,
            "$groups" => Self::Groups,
            "$set" => Self::Set,
            "$set_once" => Self::SetOnce,
            "$unset" => Self::Unset,
            "$is_server" => Self::IsServer,
            "$anon_distinct_id" => Self::AnonDistinctId,
            "alias" => Self::Alias,
            _ => return None,
        })
    }
}

/// One pass over an event's properties: the keys of `Property` and, in their order, the
/// properties PostHog derives initial properties from; no list of every entry is built and then
/// searched once per key, so a wide object costs one pass, not one per key looked for.
struct Found<'t> {
    keys: [Option<&'t str>; Property::COUNT],
    /// `initial_property` index, key, raw value.
    initial: Vec<(usize, Cow<'t, str>, &'t str)>,
}

impl<'t> Found<'t> {
    /// `None` when the properties are not a JSON object. They were valid JSON when the request
    /// was parsed: hogflare only splices its own entries into them.
    fn scan(properties: &'t str) -> Option<Self> {
        let mut found = Self {
            keys: Default::default(),
            initial: Vec::new(),
        };
        for entry in json_entries::entries_of_valid(properties).ok()? {
            let (key, value) = entry.ok()?;
            if let Some(known) = Property::of(&key) {
                found.keys[known as usize].get_or_insert(value);
            } else if let Some(index) = initial_property(&key) {
                found.initial.push((index, key, value));
            }
        }
        Some(found)
    }

    /// A key's value unless it is `null`.
    fn get(&self, key: Property) -> Option<&str> {
        self.keys[key as usize].filter(|raw| !rawjson::is_null(raw))
    }
}

impl PersonEvent {
    /// Read an event's person and group operations from its (final) properties text.
    #[cfg(test)]
    pub fn read(event: &str, properties: &str) -> Self {
        Found::scan(properties).map_or_else(Self::default, |found| Self::read_found(event, &found))
    }

    /// `read`, and the properties left without `$process_person_profile` where the event
    /// processes a person: PostHog's `normalizeProcessPerson` keeps it only as `false` (posthog-js
    /// sends it on every event). Cut out of the text where this pass found it, so the row costs
    /// no other pass over its properties.
    pub fn read_normalizing(event: &str, properties: &mut String) -> Self {
        let Some(found) = Found::scan(properties) else {
            return Self::default();
        };
        let out = Self::read_found(event, &found);
        let cut = found.keys[Property::ProcessPersonProfile as usize]
            .filter(|_| out.mode != PersonMode::Personless)
            .and_then(|value| {
                let start = rawjson::offset_in(properties, value)?;
                rawjson::entry_around(properties, "$process_person_profile", start..start + value.len())
            });
        if let Some(cut) = cut {
            properties.replace_range(cut, "");
        }
        out
    }

    fn read_found(event: &str, found: &Found<'_>) -> Self {
        let mut out = Self::default();
        let get = |key: Property| found.get(key);
        // A group identify goes with its distinct id's person, created when it has none, as on
        // PostHog; what it changes is the group's properties, never the person's.
        let group_identify = event == "$groupidentify";
        if group_identify {
            // PostHog's group step skips a type or key that JavaScript reads as false (`0`,
            // `false`, `""`).
            let named = |key: Property| get(key).filter(|raw| javascript::truthy(raw)).and_then(text);
            let group_type = named(Property::GroupType);
            let group_key = named(Property::GroupKey);
            if let (Some(group_type), Some(group_key)) = (group_type, group_key) {
                if group_type.chars().count() <= MAX_GROUP_CHARS && group_key.chars().count() <= MAX_GROUP_CHARS {
                    let set = get(Property::GroupSet).map(owned_entries).unwrap_or_default();
                    out.group_identify = Some(GroupIdentify {
                        group_type,
                        group_key,
                        set,
                    });
                }
            }
        } else if get(Property::ProcessPersonProfile).is_some_and(|raw| raw.trim() == "false") {
            out.mode = PersonMode::Personless;
        } else if READ_ONLY_PERSON_EVENTS.contains(&event) {
            // PostHog sends heatmaps and exceptions down pipelines of their own that only read
            // persons: the row goes with the person its distinct id has, and makes none.
            out.mode = PersonMode::Existing;
        } else if event == FEATURE_FLAG_CALLED
            && get(Property::ProcessPersonProfile).is_none_or(|raw| raw.trim() != "true")
            && get(Property::Groups).is_none_or(|raw| object_entries(raw).is_empty())
        {
            out.mode = PersonMode::FullIfKnown;
        }
        if let Some(groups) = get(Property::Groups) {
            out.groups = object_entries(groups)
                .into_iter()
                .map(|(group_type, raw)| (group_type.into_owned(), text(raw)))
                .collect();
        }
        if let Some(group) = &out.group_identify {
            // The group identified is the event's group of its type, even where `$groups` names
            // another: the row's group columns and `group_properties` then show the group the
            // event changed (which the `groups` view reads), not one it did not touch.
            out.groups.retain(|(group_type, _)| *group_type != group.group_type);
            out.groups
                .push((group.group_type.clone(), Some(group.group_key.clone())));
        }
        if !matches!(out.mode, PersonMode::Full | PersonMode::FullIfKnown) || group_identify {
            return out;
        }

        let update = &mut out.update;
        let set = get(Property::Set).map(object_entries).unwrap_or_default();
        let set_once = get(Property::SetOnce).map(object_entries).unwrap_or_default();
        // The initial properties' values usually go in twice, besides `$set` and `$set_once`.
        let initials = found.initial.len();
        update.reserve(
            [Property::Set, Property::SetOnce]
                .map(|key| get(key).map_or(0, str::len))
                .iter()
                .sum::<usize>()
                + 2048,
            set.len() + initials,
            set_once.len() + initials,
        );
        for (key, value) in &set {
            update.push_read(Writes::Set, key, value);
        }
        for (key, value) in &set_once {
            update.push_read(Writes::SetOnce, key, value);
        }
        for key in get(Property::Unset).map(unset_keys).unwrap_or_default() {
            update.push_unset(&key);
        }
        if !NO_INITIAL_PROPERTIES.contains(&event) {
            let is_server = get(Property::IsServer).is_some_and(|raw| raw.trim() == "true");
            // Only a key's first use can add anything: a bit per known property marks it used,
            // so properties that repeat a key many times stay linear to read.
            let (mut seen_set, mut seen_once) = (0u64, 0u64);
            for (index, key, value) in &found.initial {
                let index = *index;
                // `$os_name` stands for `$os`, which decoding added beside it when it was missing.
                if key == "$os_name" || is_server && matches!(key.as_ref(), "$os" | "$os_version") {
                    continue;
                }
                let bit = 1u64 << index;
                // Each name is added once, so it only has to be looked for among `$set`'s own.
                if seen_set & bit == 0 {
                    seen_set |= bit;
                    if !set.iter().any(|(known, _)| known == key) {
                        update.push_read(Writes::Set, key, value);
                    }
                }
                if seen_once & bit == 0 && !rawjson::is_null(value) {
                    seen_once |= bit;
                    let initial = INITIAL_NAMES[index];
                    if !set_once.iter().any(|(known, _)| known == initial) {
                        update.push_set_once_initial(initial, value);
                    }
                }
            }
        }

        update.seal();

        let other = |key: Property| get(key).and_then(other_id);
        out.identity = match event {
            "$identify" => other(Property::AnonDistinctId).map(|other| IdentityOp {
                kind: IdentityKind::Identify,
                other,
            }),
            "$create_alias" => other(Property::Alias).map(|other| IdentityOp {
                kind: IdentityKind::Alias,
                other,
            }),
            "$merge_dangerously" => other(Property::Alias).map(|other| IdentityOp {
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
    // JavaScript's `trim()`: Unicode's white space but NEL, and the byte order mark.
    if id
        .chars()
        .all(|c| (c.is_whitespace() && c != '\u{85}') || c == '\u{feff}')
    {
        return true;
    }
    // Only the emptiness check trims, as PostHog's does: `" anonymous "` is a legal id.
    let bare = [('"', '"'), ('\'', '\'')]
        .iter()
        .find_map(|(open, close)| id.strip_prefix(*open)?.strip_suffix(*close))
        .unwrap_or(id);
    ANY_CASE.iter().any(|illegal| bare.eq_ignore_ascii_case(illegal)) || EXACT.contains(&bare)
}

#[cfg(test)]
#[path = "person_event_tests.rs"]
mod tests;
