//! PostHog's capture v1 (`POST /i/v1/analytics/events`), which posthog-python and posthog-node
//! send when `POSTHOG_CAPTURE_MODE=v1`: a strict batch, the token in `Authorization: Bearer`,
//! `$lib` in the `PostHog-Sdk-Info` header, a few properties moved into typed fields, and an
//! answer that gives every event its own verdict.
//!
//! Its events are translated into the legacy `/batch` shape, so that from there they are decoded,
//! stored and shipped like every other event. What the translation refuses is PostHog's: a body
//! that breaks the schema, or whose uuids are missing, invalid or repeated, is a 400 for the whole
//! batch (the SDK's events could not be told apart in the answer); an event that breaks a rule of
//! its own is dropped alone, and named in the answer.

use chrono::DateTime;
use sonic_rs::{JsonContainerTrait, JsonValueMutTrait, JsonValueTrait, Value};

use super::error::{CoreError, Result};
use super::event::DropReason;
use super::rawjson;

/// PostHog's longest event name and distinct id, in bytes.
const MAX_NAME_BYTES: usize = 200;
/// A `PostHog-Sdk-Info` header longer than this names no library.
const MAX_SDK_INFO_BYTES: usize = 200;

/// Distinct ids that v1 accepts but never gives a person: values sent by mistake for a real id.
const ILLEGAL_DISTINCT_IDS: [&str; 20] = [
    "0",
    "00000000-0000-0000-0000-000000000000",
    "[object object]",
    "anonymous",
    "anonymous-user",
    "backend",
    "distinct_id",
    "distinctid",
    "email",
    "false",
    "guest",
    "id",
    "nan",
    "none",
    "not_authenticated",
    "null",
    "system",
    "true",
    "undefined",
    "user",
];

/// What the answer says of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Accepted, with a note (`person_processing_disabled` for an illegal distinct id).
    OkWith(&'static str),
    /// Refused for good; the client must not send it again.
    Drop(DropReason),
}

/// Every event of a request, in order: its uuid as the client wrote it and the verdict of v1's
/// own checks (`None`: passed).
pub type Checked = Vec<(String, Option<Verdict>)>;

/// A v1 request translated: the legacy body of the events that passed v1's own checks, and
/// every event's verdict so far.
#[derive(Debug)]
pub struct Translated {
    pub legacy: String,
    pub items: Checked,
}

/// `PostHog-Sdk-Info: <lib>/<version>`, split at the last slash; `None` when either side is empty.
pub fn sdk_info(header: &str) -> Option<(&str, &str)> {
    if header.len() > MAX_SDK_INFO_BYTES {
        return None;
    }
    let (lib, version) = header.rsplit_once('/')?;
    let (lib, version) = (lib.trim(), version.trim());
    (!lib.is_empty() && !version.is_empty()).then_some((lib, version))
}

fn schema(detail: impl std::fmt::Display) -> CoreError {
    CoreError::InvalidShape(format!("capture v1 body: {detail}"))
}

/// A required string field of an event.
fn required_str<'v>(event: &'v Value, key: &str, index: usize) -> Result<&'v str> {
    match event.get(key) {
        Some(value) if value.is_str() => Ok(value.as_str().unwrap_or_default()),
        Some(_) => Err(schema(format_args!("batch[{index}].{key} must be a string"))),
        None => Err(schema(format_args!("batch[{index}].{key} is missing"))),
    }
}

/// An optional string field: absent and `null` are the same.
fn optional_str<'v>(event: &'v Value, key: &str, index: usize) -> Result<Option<&'v str>> {
    match event.get(key) {
        None => Ok(None),
        Some(value) if value.is_null() => Ok(None),
        Some(value) => value
            .as_str()
            .map(Some)
            .ok_or_else(|| schema(format_args!("batch[{index}].{key} must be a string or null"))),
    }
}

/// v1's booleans: `true`/`false`, the strings `"true"`/`"false"`/`"1"`/`"0"` in any case, or any
/// number (non-zero is true).
fn lenient_bool(value: &Value) -> Option<bool> {
    if let Some(flag) = value.as_bool() {
        return Some(flag);
    }
    if let Some(text) = value.as_str() {
        return match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        };
    }
    value.as_f64().map(|number| number != 0.0)
}

/// The properties an event's `options` stand for, or `None` when one cannot be read.
fn options_as_properties(options: Option<&Value>) -> Option<Vec<(&'static str, Value)>> {
    let Some(options) = options.filter(|options| !options.is_null()) else {
        return Some(Vec::new());
    };
    let object = options.as_object()?;
    let mut properties = Vec::new();
    for (option, property) in [
        ("cookieless_mode", "$cookieless_mode"),
        ("disable_skew_correction", "$ignore_sent_at"),
        ("process_person_profile", "$process_person_profile"),
    ] {
        if let Some(value) = object.get(&option).filter(|value| !value.is_null()) {
            properties.push((property, Value::from(lenient_bool(value)?)));
        }
    }
    if let Some(value) = object.get(&"product_tour_id").filter(|value| !value.is_null()) {
        if !(value.is_str() || value.is_i64() || value.is_u64()) {
            return None;
        }
        properties.push(("$product_tour_id", value.clone()));
    }
    Some(properties)
}

fn is_illegal_distinct_id(id: &str) -> bool {
    ILLEGAL_DISTINCT_IDS
        .iter()
        .any(|illegal| illegal.eq_ignore_ascii_case(id))
}

/// Translate a v1 body (JSON text) into a legacy batch for `token`. `sdk` is the parsed
/// `PostHog-Sdk-Info`.
pub fn translate(text: &str, token: &str, sdk: Option<(&str, &str)>) -> Result<Translated> {
    let mut document = rawjson::value(text)?;
    if !document.is_object() {
        return Err(schema("expected a json object"));
    }
    let created_at = match document.get("created_at") {
        Some(value) => value.as_str().ok_or_else(|| schema("created_at must be a string"))?,
        None => return Err(schema("created_at is missing")),
    };
    if DateTime::parse_from_rfc3339(created_at).is_err() {
        return Err(schema(format_args!(
            "created_at is not an RFC 3339 time: {created_at:?}"
        )));
    }
    let historical_migration = match document.get("historical_migration") {
        None => false,
        Some(value) if value.is_null() => false,
        Some(value) => value
            .as_bool()
            .ok_or_else(|| schema("historical_migration must be a boolean"))?,
    };
    let batch = match document.get_mut("batch") {
        Some(batch) => batch.as_array_mut().ok_or_else(|| schema("batch must be an array"))?,
        None => return Err(schema("batch is missing")),
    };
    if batch.is_empty() {
        return Err(CoreError::EmptyBatch);
    }

    let mut seen = std::collections::HashSet::with_capacity(batch.len());
    let mut items = Vec::with_capacity(batch.len());
    let mut legacy_events = Vec::with_capacity(batch.len());
    for (index, event) in batch.iter_mut().enumerate() {
        let (sent_uuid, verdict, legacy) = translate_event(event, index, sdk, &mut seen)?;
        items.push((sent_uuid, verdict));
        legacy_events.extend(legacy);
    }
    drop(document);

    let mut body = Value::new_object_with(3);
    let envelope = body.as_object_mut().ok_or_else(|| schema("envelope"))?;
    envelope.insert("api_key", Value::from(token));
    envelope.insert("historical_migration", Value::from(historical_migration));
    envelope.insert("batch", Value::from(legacy_events));
    let legacy = sonic_rs::to_string(&body).map_err(schema)?;
    Ok(Translated { legacy, items })
}

/// One event: the uuid as the client wrote it (the answer's key, which SDKs look their events up
/// by), the verdict of v1's checks, and the legacy event when they passed. Its properties are
/// moved out of the request's document, not copied.
fn translate_event(
    event: &mut Value,
    index: usize,
    sdk: Option<(&str, &str)>,
    seen: &mut std::collections::HashSet<uuid::Uuid>,
) -> Result<(String, Option<Verdict>, Option<Value>)> {
    if !event.is_object() {
        return Err(schema(format_args!("batch[{index}] must be an object")));
    }
    let sent_uuid = required_str(event, "uuid", index)?.trim().to_owned();
    if sent_uuid.is_empty() {
        return Err(schema(format_args!("batch[{index}].uuid is empty")));
    }
    let uuid = uuid::Uuid::parse_str(&sent_uuid)
        .map_err(|_| schema(format_args!("batch[{index}].uuid is not a uuid: {sent_uuid:?}")))?;
    if !seen.insert(uuid) {
        return Err(schema(format_args!(
            "batch[{index}].uuid repeats an earlier event's: {sent_uuid}"
        )));
    }
    let name = required_str(event, "event", index)?.to_owned();
    let distinct_id = required_str(event, "distinct_id", index)?.trim().to_owned();
    let timestamp = required_str(event, "timestamp", index)?.to_owned();
    let session_id = optional_str(event, "session_id", index)?.map(str::to_owned);
    let window_id = optional_str(event, "window_id", index)?.map(str::to_owned);

    let refused = if name == "$performance_event" {
        Some(DropReason::DroppedPerformanceEvent)
    } else if name.is_empty() {
        Some(DropReason::MissingEventName)
    } else if name.len() > MAX_NAME_BYTES {
        Some(DropReason::EventNameTooLong)
    } else if distinct_id.is_empty() {
        Some(DropReason::MissingDistinctId)
    } else if distinct_id.len() > MAX_NAME_BYTES {
        Some(DropReason::DistinctIdTooLarge)
    } else if DateTime::parse_from_rfc3339(&timestamp).is_err() {
        Some(DropReason::InvalidEventTimestamp)
    } else if event.get("properties").is_some_and(|p| !p.is_object()) {
        Some(DropReason::MalformedEventProperties)
    } else {
        None
    };
    if let Some(reason) = refused {
        return Ok((sent_uuid, Some(Verdict::Drop(reason)), None));
    }
    let Some(injected) = options_as_properties(event.get("options")) else {
        return Ok((sent_uuid, Some(Verdict::Drop(DropReason::InvalidOptions)), None));
    };

    let mut properties = event
        .get_mut("properties")
        .map_or_else(|| Value::new_object_with(8), std::mem::take);
    let object = properties.as_object_mut().ok_or_else(|| schema("properties"))?;
    // v1 sets these last, over a client's own keys of the same name.
    let mut set = |key: &str, value: Value| {
        object.insert(key, value);
    };
    for (key, value) in [("$session_id", session_id), ("$window_id", window_id)] {
        if let Some(value) = value {
            set(key, Value::from(value.as_str()));
        }
    }
    for (key, value) in injected {
        set(key, value);
    }
    if let Some((lib, version)) = sdk {
        set("$lib", Value::from(lib));
        set("$lib_version", Value::from(version));
    }
    let illegal = is_illegal_distinct_id(&distinct_id);
    if illegal {
        set("$process_person_profile", Value::from(false));
    }

    let mut legacy = Value::new_object_with(5);
    let entry = legacy.as_object_mut().ok_or_else(|| schema("event"))?;
    entry.insert("event", Value::from(name.as_str()));
    entry.insert("uuid", Value::from(uuid.to_string().as_str()));
    entry.insert("distinct_id", Value::from(distinct_id.as_str()));
    entry.insert("timestamp", Value::from(timestamp.as_str()));
    entry.insert("properties", properties);
    let verdict = illegal.then_some(Verdict::OkWith("person_processing_disabled"));
    Ok((sent_uuid, verdict, Some(legacy)))
}

/// The answer: `{"results": {"<uuid>": {"result": "ok"|"drop", "details": "<why>"}}}`, every
/// event in the request's order. Reasons are fixed tags.
pub fn results_json(items: &[(String, Verdict)]) -> String {
    let mut out = String::with_capacity(16 + items.len() * 64);
    out.push_str(r#"{"results":{"#);
    for (position, (uuid, verdict)) in items.iter().enumerate() {
        if position > 0 {
            out.push(',');
        }
        let (result, details) = match verdict {
            Verdict::Ok => ("ok", None),
            Verdict::OkWith(details) => ("ok", Some(*details)),
            Verdict::Drop(reason) => ("drop", Some(reason.as_str())),
        };
        rawjson::push_string(&mut out, uuid);
        out.push_str(r#":{"result":""#);
        out.push_str(result);
        out.push('"');
        if let Some(details) = details {
            out.push_str(r#","details":""#);
            out.push_str(details);
            out.push('"');
        }
        out.push('}');
    }
    out.push_str("}}");
    out
}

#[cfg(test)]
#[path = "analytics_v1_tests.rs"]
mod tests;
