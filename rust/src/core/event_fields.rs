//! The top-level fields of one SDK item, read by PostHog's rules: which keys the row takes,
//! where the distinct id is looked for and how it is cut to PostHog's length, the uuid (the
//! client's, or a new UUIDv7), timestamps and offsets in every form the SDKs send, and the event
//! name a route or a Segment-style `type` implies.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use sonic_rs::{JsonType, JsonValueTrait, Value};
use uuid::Uuid;

use super::drop_reason::DropReason;
use super::properties::{Known, GROUP_COLUMNS};
use super::rawjson::{self, RawObject};
use super::request::RouteKind;
use super::timestamp;

/// The person updates an event can carry, at its top level and in its properties.
pub(super) const PERSON_UPDATES: [&str; 3] = ["$set", "$set_once", "$unset"];

/// What a personless event's row goes without: its person updates, which would read as applied,
/// and group columns, as PostHog's `createEvent` drops them (the event is in no group either).
const PERSONLESS_STRIPPED: [&str; 8] = [
    "$set",
    "$set_once",
    "$unset",
    GROUP_COLUMNS[0],
    GROUP_COLUMNS[1],
    GROUP_COLUMNS[2],
    GROUP_COLUMNS[3],
    GROUP_COLUMNS[4],
];

const EXCEPTION_STRIPPED: [&str; 2] = ["$set", "$set_once"];

/// The keys of its properties an event's row goes without, as PostHog's ingestion leaves them.
pub(super) fn stripped_from_row(event: &str, personless: bool) -> &'static [&'static str] {
    if personless {
        &PERSONLESS_STRIPPED
    } else if event == "$groupidentify" {
        // A group identify changes its group, never its person.
        &PERSON_UPDATES
    } else if event == "$exception" {
        // PostHog's error tracking drops an exception's `$set` and `$set_once`, which it never
        // applies (its row's person properties are the person's own).
        &EXCEPTION_STRIPPED
    } else {
        &[]
    }
}

/// PostHog cuts distinct ids and event names to this many characters.
pub(super) const MAX_ID_CHARS: usize = 200;

/// Top-level keys read into the row; everything else lands in `extra`.
pub(super) const CONSUMED: [&str; 17] = [
    "event",
    "distinct_id",
    "$distinct_id",
    "properties",
    "uuid",
    "timestamp",
    "offset",
    "sent_at",
    "token",
    "$token",
    "api_key",
    "$set",
    "$set_once",
    "$unset",
    "context",
    "$anon_distinct_id",
    "alias",
];

pub(super) fn truncate_chars(mut text: String, max: usize) -> String {
    if let Some((index, _)) = text.char_indices().nth(max) {
        text.truncate(index);
    }
    text
}

fn clean_id(text: String) -> Option<String> {
    // Only an empty id names no one: PostHog's capture keeps one of spaces, untrimmed.
    if text.is_empty() {
        return None;
    }
    let text = if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    };
    Some(truncate_chars(text, MAX_ID_CHARS))
}

/// An object or array as PostHog's capture writes it into a distinct id: the JSON text
/// serde_json makes of it (compact, an object's keys in order), so an id reads the same wherever
/// in the event it was sent. Numbers and the like keep the text they were sent as.
fn json_id(raw: &str) -> String {
    if !raw.starts_with(['{', '[']) {
        return raw.to_owned();
    }
    serde_json::from_str::<serde_json::Value>(raw).map_or_else(|_| raw.to_owned(), |value| value.to_string())
}

/// A distinct id from a raw JSON value: strings as they are, anything else as its JSON text.
fn id_from_raw(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if rawjson::is_null(raw) {
        return None;
    }
    clean_id(rawjson::as_str(raw).map_or_else(|| json_id(raw), Cow::into_owned))
}

fn id_from_value(value: &Value) -> Option<String> {
    match value.get_type() {
        JsonType::Null => None,
        JsonType::String => clean_id(value.as_str().unwrap_or_default().to_owned()),
        _ => clean_id(json_id(&sonic_rs::to_string(value).unwrap_or_default())),
    }
}

/// The item's distinct id: at its top level, then in its properties, then where a route's
/// oldest shapes keep it.
pub(super) fn distinct_id_of(
    route: RouteKind,
    item: &RawObject<'_>,
    known: &Known<'_>,
    properties: &Value,
) -> Option<String> {
    ["distinct_id", "$distinct_id"]
        .into_iter()
        .filter_map(|key| item.get(key))
        .find_map(id_from_raw)
        .or_else(|| {
            [known.distinct_id, known.dollar_distinct_id]
                .into_iter()
                .flatten()
                .find_map(id_from_value)
        })
        .or_else(|| {
            // The oldest recording shape keeps the id in `metadata`.
            (route == RouteKind::Recording)
                .then(|| item.get("metadata").and_then(|m| rawjson::value(m).ok()))
                .flatten()
                .and_then(|metadata| metadata.get("distinct_id").and_then(id_from_value))
        })
        .or_else(|| {
            // Hogflare's `/groups`, and its typed group identify, name the row after the group.
            (lifted_keys(route, item) == GROUP_NAMING.as_slice())
                .then(|| {
                    item.get("group_key").and_then(id_from_raw).or_else(|| {
                        ["$group_key", "group_key"]
                            .into_iter()
                            .find_map(|key| properties.get(key).and_then(id_from_value))
                    })
                })
                .flatten()
        })
}

/// The client's uuid, kept as the row's; a new UUIDv7 when it sent none.
pub(super) fn uuid_of(item: &mut RawObject<'_>) -> Result<Uuid, DropReason> {
    let Some(raw) = non_null(item.take("uuid")) else {
        return Ok(Uuid::now_v7());
    };
    match rawjson::as_str(&raw) {
        Some(text) if text.is_empty() => Ok(Uuid::now_v7()),
        Some(text) => Uuid::try_parse(text.trim()).map_err(|_| DropReason::InvalidUuid),
        None => Err(DropReason::InvalidUuid),
    }
}

pub(super) fn default_event_name(route: RouteKind, item: &RawObject<'_>) -> Option<&'static str> {
    match route {
        RouteKind::Engage | RouteKind::Identify => return Some("$identify"),
        RouteKind::Alias => return Some("$create_alias"),
        RouteKind::Groups => return Some("$groupidentify"),
        RouteKind::Recording => return Some("$snapshot"),
        // Every v1 event has a name: the translation drops those without.
        RouteKind::AnalyticsV1 => return None,
        RouteKind::Event | RouteKind::LegacyEvent => {}
    }
    // Old SDKs and Segment-style clients name the call in `type` instead.
    match rawjson::as_str(item.get("type")?)?.to_ascii_lowercase().as_str() {
        "identify" | "engage" => Some("$identify"),
        "alias" => Some("$create_alias"),
        "groupidentify" | "group_identify" | "group" => Some("$groupidentify"),
        "page" => Some("$pageview"),
        "screen" => Some("$screen"),
        _ => None,
    }
}

/// Hogflare's names of a group's type and key, and the properties PostHog reads them from.
pub(super) const GROUP_NAMING: [(&str, &str); 2] = [("group_type", "$group_type"), ("group_key", "$group_key")];

/// Top-level keys of Hogflare's shapes that the event's properties take, under PostHog's names:
/// `/identify`'s anonymous id, `/alias`'s alias, `/groups`' type and key, and the same of a
/// `/batch` item that names its call in `type`.
pub(super) fn lifted_keys(route: RouteKind, item: &RawObject<'_>) -> &'static [(&'static str, &'static str)] {
    const ANON: &[(&str, &str)] = &[("$anon_distinct_id", "$anon_distinct_id")];
    const ALIAS: &[(&str, &str)] = &[("alias", "alias")];
    match route {
        RouteKind::Identify => ANON,
        RouteKind::Alias => ALIAS,
        RouteKind::Groups => &GROUP_NAMING,
        RouteKind::Event | RouteKind::LegacyEvent => {
            let kind = item.get("type").and_then(rawjson::as_str);
            let is = |names: &[&str]| {
                kind.as_deref()
                    .is_some_and(|kind| names.iter().any(|name| kind.eq_ignore_ascii_case(name)))
            };
            if is(&["alias"]) {
                ALIAS
            } else if is(&["identify"]) {
                ANON
            } else if is(&["groupidentify", "group_identify", "group"]) {
                &GROUP_NAMING
            } else {
                &[]
            }
        }
        RouteKind::Engage | RouteKind::Recording | RouteKind::AnalyticsV1 => &[],
    }
}

pub(super) fn is_true(value: Option<&Value>) -> bool {
    value.is_some_and(|value| {
        value.as_bool() == Some(true) || value.as_str().is_some_and(|t| t.eq_ignore_ascii_case("true"))
    })
}

/// Whether JavaScript would take the value for true, as PostHog's ingestion tests its switches
/// (`$geoip_disable`, the own `$ip`): anything but `null`, `false`, `0` and `""`.
pub(super) fn is_truthy(value: Option<&Value>) -> bool {
    value.is_some_and(|value| match value.get_type() {
        JsonType::Null => false,
        JsonType::Boolean => value.as_bool() == Some(true),
        JsonType::Number => value.as_f64().is_some_and(|number| number != 0.0),
        JsonType::String => value.as_str().is_some_and(|text| !text.is_empty()),
        _ => true,
    })
}

pub(super) fn timestamp_from_raw(raw: &str) -> Option<DateTime<Utc>> {
    match rawjson::as_str(raw) {
        Some(text) => timestamp::parse_text(&text),
        None => raw.trim().parse::<f64>().ok().and_then(timestamp::from_epoch_number),
    }
}

pub(super) fn offset_from_raw(raw: &str) -> Option<i64> {
    let text = rawjson::as_str(raw).unwrap_or(Cow::Borrowed(raw));
    let number: f64 = text.trim().parse().ok()?;
    number.is_finite().then_some(number as i64)
}

pub(super) fn non_null(raw: Option<Cow<'_, str>>) -> Option<Cow<'_, str>> {
    raw.filter(|raw| !rawjson::is_null(raw))
}
