//! One raw SDK event → one normalised event, or a reason to drop it. The rules are PostHog's
//! (distinct_id and token lookup, uuid, timestamps, `$set` merging), checked item by item so a
//! bad item never sinks its batch.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::request::RouteKind;
use super::timestamp::{self, ClientTime};

/// PostHog cuts distinct ids and event names to this many characters.
const MAX_ID_CHARS: usize = 200;
/// `$session_id` as capture validates it.
const MAX_SESSION_ID_CHARS: usize = 70;

/// Why an item was dropped; the name is what logs and metrics show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    NotAnObject,
    MissingEventName,
    InvalidEventName,
    MissingDistinctId,
    InvalidUuid,
    InvalidProperties,
    EventTooLarge,
    InvalidSessionId,
    MissingSnapshotData,
    UnsupportedRecordingEvent,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAnObject => "not_an_object",
            Self::MissingEventName => "missing_event_name",
            Self::InvalidEventName => "invalid_event_name",
            Self::MissingDistinctId => "missing_distinct_id",
            Self::InvalidUuid => "invalid_uuid",
            Self::InvalidProperties => "invalid_properties",
            Self::EventTooLarge => "event_too_large",
            Self::InvalidSessionId => "invalid_session_id",
            Self::MissingSnapshotData => "missing_snapshot_data",
            Self::UnsupportedRecordingEvent => "unsupported_recording_event",
        }
    }
}

/// Not an error, but worth counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Warning {
    InvalidTimestamp,
    TimestampAdjusted,
}

impl Warning {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::TimestampAdjusted => "timestamp_adjusted",
        }
    }
}

#[derive(Debug)]
pub enum Outcome {
    Event(Box<NormalizedEvent>),
    /// Silently discarded as PostHog does (`$performance_event`).
    Filtered,
    Dropped(DropReason),
}

/// An event ready to be stored: every field of the lake row except what the store adds.
#[derive(Debug, Clone)]
pub struct NormalizedEvent {
    pub uuid: Uuid,
    pub event: String,
    pub distinct_id: String,
    pub timestamp: DateTime<Utc>,
    pub properties: Map<String, Value>,
    pub context: Option<String>,
    pub extra: Option<String>,
    /// Bytes this event will take as a row, for the per-event cap.
    pub approx_bytes: usize,
}

/// Request-level facts every item of a request shares.
#[derive(Debug)]
pub struct ItemContext<'a> {
    pub route: RouteKind,
    pub now: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub historical_migration: bool,
    pub shared: &'a Map<String, Value>,
    pub max_event_bytes: usize,
}

/// Top-level keys that are read into the row; everything else lands in `extra`.
const CONSUMED: [&str; 5] = ["distinct_id", "$distinct_id", "token", "$token", "api_key"];

fn truncate_chars(mut text: String, max: usize) -> String {
    if let Some((index, _)) = text.char_indices().nth(max) {
        text.truncate(index);
    }
    text
}

fn stringify_id(value: &Value) -> Option<String> {
    let text = match value {
        Value::Null => return None,
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
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

fn default_event_name(route: RouteKind, map: &Map<String, Value>) -> Option<&'static str> {
    match route {
        RouteKind::Engage | RouteKind::Identify => return Some("$identify"),
        RouteKind::Alias => return Some("$create_alias"),
        RouteKind::Groups => return Some("$groupidentify"),
        RouteKind::Recording => return Some("$snapshot"),
        RouteKind::Event | RouteKind::LegacyEvent => {}
    }
    // Old SDKs and Segment-style clients name the call in `type` instead.
    match map.get("type").and_then(Value::as_str)?.to_ascii_lowercase().as_str() {
        "identify" | "engage" => Some("$identify"),
        "alias" => Some("$create_alias"),
        "groupidentify" | "group_identify" | "group" => Some("$groupidentify"),
        "page" => Some("$pageview"),
        "screen" => Some("$screen"),
        _ => None,
    }
}

/// Merge a top-level `$set`/`$set_once` object into the one in properties; top level wins.
fn merge_object_into(properties: &mut Map<String, Value>, key: &str, top: Value) {
    let Value::Object(top) = top else { return };
    match properties.get_mut(key) {
        Some(Value::Object(existing)) => existing.extend(top),
        _ => {
            properties.insert(key.to_owned(), Value::Object(top));
        }
    }
}

fn merge_unset_into(properties: &mut Map<String, Value>, top: Value) {
    let keys: Vec<Value> = match top {
        Value::Array(keys) => keys,
        Value::Object(map) => map.into_iter().map(|(key, _)| Value::String(key)).collect(),
        Value::String(key) => vec![Value::String(key)],
        _ => return,
    };
    match properties.get_mut("$unset") {
        Some(Value::Array(existing)) => {
            for key in keys {
                if !existing.contains(&key) {
                    existing.push(key);
                }
            }
        }
        _ => {
            properties.insert("$unset".into(), Value::Array(keys));
        }
    }
}

fn is_true(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(flag)) => *flag,
        Some(Value::String(text)) => text.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn offset_ms(value: Option<Value>) -> Option<i64> {
    match value? {
        Value::Number(number) => number.as_i64().or_else(|| number.as_f64().map(|f| f as i64)),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// Move Hogflare's route-specific top-level fields into the properties PostHog reads.
fn apply_route_shape(route: RouteKind, map: &mut Map<String, Value>, properties: &mut Map<String, Value>) {
    let mut lift = |from: &str, to: &str, map: &mut Map<String, Value>| {
        if let Some(value) = map.shift_remove(from) {
            properties.entry(to.to_owned()).or_insert(value);
        }
    };
    match route {
        RouteKind::Identify => {
            lift("$anon_distinct_id", "$anon_distinct_id", map);
            // Hogflare's /identify treats plain properties as the person's `$set`.
            if !properties.contains_key("$set") && !properties.contains_key("$set_once") {
                let set: Map<String, Value> = properties
                    .iter()
                    .filter(|(key, _)| {
                        !key.starts_with('$') && key.as_str() != "distinct_id" && key.as_str() != "token"
                    })
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect();
                if !set.is_empty() {
                    properties.insert("$set".into(), Value::Object(set));
                }
            }
        }
        RouteKind::Alias => lift("alias", "alias", map),
        RouteKind::Groups => {
            lift("group_type", "$group_type", map);
            lift("group_key", "$group_key", map);
            if !properties.contains_key("$group_set") {
                let set: Map<String, Value> = properties
                    .iter()
                    .filter(|(key, _)| !key.starts_with('$'))
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect();
                properties.insert("$group_set".into(), Value::Object(set));
            }
        }
        RouteKind::Event | RouteKind::LegacyEvent | RouteKind::Engage | RouteKind::Recording => {}
    }
    if matches!(route, RouteKind::Event | RouteKind::LegacyEvent) {
        if let Some(alias) = map.get("alias") {
            if !properties.contains_key("alias") && matches!(map.get("type").and_then(Value::as_str), Some("alias")) {
                properties.insert("alias".into(), alias.clone());
                map.shift_remove("alias");
            }
        }
    }
}

/// Turn a `$snapshot` item into the `$snapshot_items` row capture and Hogflare store.
fn shape_recording(properties: &mut Map<String, Value>, distinct_id: &str) -> Result<(), DropReason> {
    let session_id = match properties.get("$session_id") {
        Some(Value::String(id))
            if !id.is_empty()
                && id.chars().count() <= MAX_SESSION_ID_CHARS
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            id.clone()
        }
        _ => return Err(DropReason::InvalidSessionId),
    };
    let items = match properties
        .shift_remove("$snapshot_data")
        .or_else(|| properties.shift_remove("$snapshot_items"))
    {
        Some(Value::Array(items)) => items,
        Some(object @ Value::Object(_)) => vec![object],
        _ => return Err(DropReason::MissingSnapshotData),
    };
    properties.insert("$snapshot_items".into(), Value::Array(items));
    properties
        .entry("$window_id")
        .or_insert_with(|| Value::String(session_id));
    properties
        .entry("$snapshot_source")
        .or_insert_with(|| Value::String("web".into()));
    properties.entry("$lib").or_insert_with(|| Value::String("web".into()));
    properties
        .entry("distinct_id")
        .or_insert_with(|| Value::String(distinct_id.to_owned()));
    Ok(())
}

/// Normalise one item. `warnings` collects what was corrected along the way.
pub fn normalize(item: Value, ctx: &ItemContext<'_>, warnings: &mut Vec<Warning>) -> Outcome {
    let Value::Object(mut map) = item else {
        return Outcome::Dropped(DropReason::NotAnObject);
    };
    for (key, value) in ctx.shared {
        if !map.contains_key(key) {
            map.insert(key.clone(), value.clone());
        }
    }

    let event = match map.shift_remove("event") {
        Some(Value::String(name)) if !name.is_empty() => truncate_chars(name, MAX_ID_CHARS),
        None | Some(Value::Null | Value::String(_)) => match default_event_name(ctx.route, &map) {
            Some(name) => name.to_owned(),
            None => return Outcome::Dropped(DropReason::MissingEventName),
        },
        Some(_) => return Outcome::Dropped(DropReason::InvalidEventName),
    };
    if event == "$performance_event" {
        return Outcome::Filtered;
    }

    let had_properties = map.contains_key("properties");
    let mut properties = match map.shift_remove("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(properties)) => properties,
        Some(_) => return Outcome::Dropped(DropReason::InvalidProperties),
    };

    let distinct_id = [map.get("distinct_id"), map.get("$distinct_id")]
        .into_iter()
        .chain([properties.get("distinct_id"), properties.get("$distinct_id")])
        .flatten()
        .find_map(stringify_id)
        .or_else(|| {
            // The oldest recording shape keeps the id in `metadata`.
            (ctx.route == RouteKind::Recording)
                .then(|| {
                    map.get("metadata")
                        .and_then(|m| m.get("distinct_id"))
                        .and_then(stringify_id)
                })
                .flatten()
        });
    let Some(distinct_id) = distinct_id else {
        return Outcome::Dropped(DropReason::MissingDistinctId);
    };

    let uuid = match map.shift_remove("uuid") {
        None | Some(Value::Null) => Uuid::now_v7(),
        Some(Value::String(text)) if text.is_empty() => Uuid::now_v7(),
        Some(Value::String(text)) => match Uuid::try_parse(text.trim()) {
            Ok(uuid) => uuid,
            Err(_) => return Outcome::Dropped(DropReason::InvalidUuid),
        },
        Some(_) => return Outcome::Dropped(DropReason::InvalidUuid),
    };

    let raw_timestamp = map.shift_remove("timestamp");
    let client_timestamp = raw_timestamp.as_ref().and_then(timestamp::parse_value);
    if raw_timestamp.as_ref().is_some_and(|v| !v.is_null()) && client_timestamp.is_none() {
        warnings.push(Warning::InvalidTimestamp);
    }
    let item_sent_at = map.shift_remove("sent_at").as_ref().and_then(timestamp::parse_value);
    let sent_at = ctx.sent_at.or(item_sent_at);
    let client = ClientTime {
        timestamp: client_timestamp,
        sent_at,
        offset_ms: offset_ms(map.shift_remove("offset")),
        ignore_sent_at: is_true(properties.get("$ignore_sent_at")),
    };
    let (timestamp, adjusted) = timestamp::resolve(ctx.now, client);
    if adjusted {
        warnings.push(Warning::TimestampAdjusted);
    }

    if let Some(set) = map.shift_remove("$set") {
        merge_object_into(&mut properties, "$set", set);
    }
    if let Some(set_once) = map.shift_remove("$set_once") {
        merge_object_into(&mut properties, "$set_once", set_once);
    }
    if let Some(unset) = map.shift_remove("$unset") {
        merge_unset_into(&mut properties, unset);
    }
    apply_route_shape(ctx.route, &mut map, &mut properties);
    if let Some(sent_at) = sent_at {
        properties
            .entry("$sent_at")
            .or_insert_with(|| Value::String(timestamp::format_rfc3339(sent_at)));
    }

    let event = if ctx.route == RouteKind::Recording {
        if !had_properties && (map.contains_key("metadata") || map.contains_key("chunk")) {
            // posthog-js's pre-2022 chunked recordings: kept whole, as Hogflare does.
            for key in CONSUMED {
                map.shift_remove(key);
            }
            let data: Map<String, Value> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            properties.insert("data".into(), Value::Object(data));
            map.clear();
            "$snapshot".to_owned()
        } else {
            if event != "$snapshot" && event != "$snapshot_items" {
                return Outcome::Dropped(DropReason::UnsupportedRecordingEvent);
            }
            if let Err(reason) = shape_recording(&mut properties, &distinct_id) {
                return Outcome::Dropped(reason);
            }
            "$snapshot_items".to_owned()
        }
    } else {
        event
    };

    let context = match map.shift_remove("context") {
        None | Some(Value::Null) => None,
        Some(value) => Some(value.to_string()),
    };
    for key in CONSUMED {
        map.shift_remove(key);
    }
    if ctx.historical_migration {
        map.insert("historical_migration".into(), Value::Bool(true));
    }
    let extra = (!map.is_empty()).then(|| Value::Object(map).to_string());

    let approx_bytes = event.len()
        + distinct_id.len()
        + context.as_ref().map_or(0, String::len)
        + extra.as_ref().map_or(0, String::len)
        + approx_json_len(&properties);
    if ctx.route != RouteKind::Recording && approx_bytes > ctx.max_event_bytes {
        return Outcome::Dropped(DropReason::EventTooLarge);
    }

    Outcome::Event(Box::new(NormalizedEvent {
        uuid,
        event,
        distinct_id,
        timestamp,
        properties,
        context,
        extra,
        approx_bytes,
    }))
}

/// A cheap upper-bound-ish estimate of a value's JSON size, without serialising it.
fn approx_json_len(map: &Map<String, Value>) -> usize {
    fn len(value: &Value) -> usize {
        match value {
            Value::Null | Value::Bool(_) => 5,
            Value::Number(_) => 24,
            Value::String(text) => text.len() + 2,
            Value::Array(items) => 2 + items.iter().map(|v| len(v) + 1).sum::<usize>(),
            Value::Object(map) => 2 + map.iter().map(|(k, v)| k.len() + 4 + len(v)).sum::<usize>(),
        }
    }
    2 + map.iter().map(|(k, v)| k.len() + 4 + len(v)).sum::<usize>()
}
