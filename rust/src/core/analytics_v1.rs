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

use std::borrow::Cow;

use chrono::DateTime;

use super::error::{CoreError, Result};
use super::event::DropReason;
use super::rawjson::{self, RawObject, Validated};

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
fn required_str<'v>(event: &'v RawObject<'_>, key: &str, index: usize) -> Result<Cow<'v, str>> {
    match event.get(key) {
        Some(raw) => rawjson::as_str(raw).ok_or_else(|| schema(format_args!("batch[{index}].{key} must be a string"))),
        None => Err(schema(format_args!("batch[{index}].{key} is missing"))),
    }
}

/// An optional string field: absent and `null` are the same.
fn optional_str<'v>(event: &'v RawObject<'_>, key: &str, index: usize) -> Result<Option<Cow<'v, str>>> {
    match event.get(key) {
        None => Ok(None),
        Some(raw) if rawjson::is_null(raw) => Ok(None),
        Some(raw) => rawjson::as_str(raw)
            .map(Some)
            .ok_or_else(|| schema(format_args!("batch[{index}].{key} must be a string or null"))),
    }
}

/// v1's booleans: `true`/`false`, the strings `"true"`/`"false"`/`"1"`/`"0"` in any case, or any
/// number (non-zero is true).
fn lenient_bool(raw: &str) -> Option<bool> {
    // A number's raw text runs to the next delimiter, whitespace included.
    let raw = raw.trim_matches(rawjson::WHITESPACE);
    match raw {
        "true" => return Some(true),
        "false" => return Some(false),
        _ => {}
    }
    if let Some(text) = rawjson::as_str(raw) {
        return match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        };
    }
    raw.parse::<f64>()
        .ok()
        .filter(|number| number.is_finite())
        .map(|number| number != 0.0)
}

const fn bool_text(value: bool) -> &'static str {
    if value {
        "true"
    } else {
        "false"
    }
}

/// The properties an event's `options` stand for (raw values), or `None` when one cannot be read.
fn options_as_properties(options: Option<&str>) -> Option<Vec<(&'static str, String)>> {
    let Some(options) = options.filter(|options| !rawjson::is_null(options)) else {
        return Some(Vec::new());
    };
    if !options.starts_with('{') {
        return None;
    }
    let object = RawObject::parse_validated(Validated(options)).ok()?;
    let mut properties = Vec::new();
    for (option, property) in [
        ("cookieless_mode", "$cookieless_mode"),
        ("disable_skew_correction", "$ignore_sent_at"),
        ("process_person_profile", "$process_person_profile"),
    ] {
        if let Some(raw) = object.get(option).filter(|raw| !rawjson::is_null(raw)) {
            properties.push((property, bool_text(lenient_bool(raw)?).to_owned()));
        }
    }
    if let Some(raw) = object.get("product_tour_id").filter(|raw| !rawjson::is_null(raw)) {
        let raw = raw.trim_matches(rawjson::WHITESPACE);
        let integer = raw.parse::<i64>().is_ok() || raw.parse::<u64>().is_ok();
        if !(raw.starts_with('"') || integer) {
            return None;
        }
        // A string either way, as PostHog's capture coerces it: a query comparing it to one finds it.
        let text = if integer {
            rawjson::string_literal(raw)
        } else {
            raw.to_owned()
        };
        properties.push(("$product_tour_id", text));
    }
    Some(properties)
}

fn is_illegal_distinct_id(id: &str) -> bool {
    ILLEGAL_DISTINCT_IDS
        .iter()
        .any(|illegal| illegal.eq_ignore_ascii_case(id))
}

/// Whether only whitespace follows the object's closing brace: iterating an object's entries
/// stops there without looking further.
fn ends_after_object(text: &str, document: &RawObject<'_>) -> bool {
    let rest = match document.entries.last() {
        Some((_, Cow::Borrowed(raw))) => rawjson::offset_in(text, raw).map(|at| &text[at + raw.len()..]),
        Some((_, Cow::Owned(_))) => None,
        None => text.trim_start_matches(rawjson::WHITESPACE).strip_prefix('{'),
    };
    rest.and_then(|rest| rest.trim_start_matches(rawjson::WHITESPACE).strip_prefix('}'))
        .is_some_and(|after| after.trim_start_matches(rawjson::WHITESPACE).is_empty())
}

/// Translate a v1 body (JSON text) into a legacy batch for `token`. `sdk` is the parsed
/// `PostHog-Sdk-Info`.
///
/// The body is read as raw text (its values are validated, not parsed into a document), and the
/// legacy batch is written from the slices of it that it keeps: each event's properties are
/// copied once, with the keys v1 sets spliced in, rather than parsed, built and serialised.
pub fn translate(text: &str, token: &str, sdk: Option<(&str, &str)>) -> Result<Translated> {
    if !text.trim_start_matches(rawjson::WHITESPACE).starts_with('{') {
        // Not an object: malformed JSON says where it breaks, anything else is the wrong shape.
        rawjson::value(text)?;
        return Err(schema("expected a json object"));
    }
    // Checked iteration validates the values it steps over, and with the escapes checked too
    // the slices it hands out may be iterated unchecked.
    let document = RawObject::parse(text)?;
    if !ends_after_object(text, &document) {
        return Err(CoreError::InvalidJson(
            "trailing characters after the JSON object".into(),
        ));
    }
    rawjson::check_unicode_escapes(text)?;
    let created_at = match document.get("created_at") {
        Some(raw) => rawjson::as_str(raw).ok_or_else(|| schema("created_at must be a string"))?,
        None => return Err(schema("created_at is missing")),
    };
    if DateTime::parse_from_rfc3339(&created_at).is_err() {
        return Err(schema(format_args!(
            "created_at is not an RFC 3339 time: {created_at:?}"
        )));
    }
    let historical_migration = match document
        .get("historical_migration")
        .map(|raw| raw.trim_matches(rawjson::WHITESPACE))
    {
        None | Some("null" | "false") => false,
        Some("true") => true,
        Some(_) => return Err(schema("historical_migration must be a boolean")),
    };
    let batch = match document.get("batch") {
        Some(raw) if raw.starts_with('[') => rawjson::validated_elements(Validated(raw))?,
        Some(_) => return Err(schema("batch must be an array")),
        None => return Err(schema("batch is missing")),
    };
    if batch.is_empty() {
        return Err(CoreError::EmptyBatch);
    }

    let mut legacy = String::with_capacity(text.len() + 64 * batch.len() + 128);
    legacy.push_str(r#"{"api_key":"#);
    rawjson::push_string(&mut legacy, token);
    legacy.push_str(r#","historical_migration":"#);
    legacy.push_str(bool_text(historical_migration));
    legacy.push_str(r#","batch":["#);
    let mut seen = std::collections::HashSet::with_capacity(batch.len());
    let mut items = Vec::with_capacity(batch.len());
    for (index, event) in batch.into_iter().enumerate() {
        let (sent_uuid, verdict) = translate_event(event, index, sdk, &mut seen, &mut legacy)?;
        items.push((sent_uuid, verdict));
    }
    legacy.push_str("]}");
    Ok(Translated { legacy, items })
}

/// One event: the uuid as the client wrote it (the answer's key, which SDKs look their events up
/// by) and the verdict of v1's checks; the legacy event is appended to `out`, the batch being
/// written, when they passed.
fn translate_event(
    raw: &str,
    index: usize,
    sdk: Option<(&str, &str)>,
    seen: &mut std::collections::HashSet<uuid::Uuid>,
    out: &mut String,
) -> Result<(String, Option<Verdict>)> {
    if !raw.starts_with('{') {
        return Err(schema(format_args!("batch[{index}] must be an object")));
    }
    let event = RawObject::parse_validated(Validated(raw))?;
    let sent_uuid = required_str(&event, "uuid", index)?.trim().to_owned();
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
    let name = required_str(&event, "event", index)?;
    let distinct_id = required_str(&event, "distinct_id", index)?;
    let distinct_id = distinct_id.trim();
    let timestamp = required_str(&event, "timestamp", index)?;
    let session_id = optional_str(&event, "session_id", index)?;
    let window_id = optional_str(&event, "window_id", index)?;
    let properties = event.get("properties");

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
    } else if properties.is_some_and(|raw| !raw.starts_with('{')) {
        Some(DropReason::MalformedEventProperties)
    } else {
        None
    };
    if let Some(reason) = refused {
        return Ok((sent_uuid, Some(Verdict::Drop(reason))));
    }
    let Some(injected) = options_as_properties(event.get("options")) else {
        return Ok((sent_uuid, Some(Verdict::Drop(DropReason::InvalidOptions))));
    };

    let mut object = match properties {
        Some(raw) => RawObject::parse_validated(Validated(raw))?,
        None => RawObject::default(),
    };
    // v1 sets these last, over a client's own keys of the same name.
    for (key, value) in [("$session_id", session_id), ("$window_id", window_id)] {
        if let Some(value) = value {
            object.set(key, rawjson::string_literal(&value));
        }
    }
    for (key, value) in injected {
        object.set(key, value);
    }
    if let Some((lib, version)) = sdk {
        object.set("$lib", rawjson::string_literal(lib));
        object.set("$lib_version", rawjson::string_literal(version));
    }
    let illegal = is_illegal_distinct_id(distinct_id);
    if illegal {
        object.set("$process_person_profile", "false");
    }

    if !out.ends_with('[') {
        out.push(',');
    }
    out.push_str(r#"{"event":"#);
    rawjson::push_string(out, &name);
    out.push_str(r#","uuid":""#);
    out.push_str(uuid.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()));
    out.push_str(r#"","distinct_id":"#);
    rawjson::push_string(out, distinct_id);
    out.push_str(r#","timestamp":"#);
    rawjson::push_string(out, &timestamp);
    out.push_str(r#","properties":"#);
    object.push_json(out);
    out.push('}');
    let verdict = illegal.then_some(Verdict::OkWith("person_processing_disabled"));
    Ok((sent_uuid, verdict))
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
