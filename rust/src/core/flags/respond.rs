//! The answers of `/flags` and `/decide`, written straight from the evaluation: each version's
//! shape (PostHog's `get_versioned_response`), and the properties a server evaluates with (what
//! the store knows, overridden by what the request says).

use sonic_rs::{JsonContainerTrait, JsonValueMutTrait, JsonValueTrait, Value};

use super::evaluate::{object_or_empty, FlagResult};
use super::{push_number, push_optional, Flag, FlagSet};
use crate::core::rawjson;

/// Which answer a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `/flags` below `v=4` and `/decide?v>=4`: the v2 `flags` map, with the v1
    /// `featureFlags`/`featureFlagPayloads` maps beside it.
    Flags,
    /// `/flags?v>=4`: the same, each record also carrying its typed `value` and its flag's
    /// `config_version` (posthog-node reads the value from these and, without them, logs that
    /// the server lacks v4).
    FlagsTyped,
    /// `/decide` without `v` or with `v=1`: the keys of the flags that are on.
    DecideV1,
    /// `/decide?v=2`: the flags that are on, with their values.
    DecideV2,
    /// `/decide?v=3`: every flag's value, and the payloads of the flags that are on.
    DecideV3,
}

impl Shape {
    /// The shape for a route and its `v` parameter.
    pub fn for_request(decide: bool, version: Option<i64>) -> Self {
        match (decide, version) {
            (true, Some(2)) => Self::DecideV2,
            (true, Some(3)) => Self::DecideV3,
            (true, Some(v)) if v >= 4 => Self::Flags,
            (true, _) => Self::DecideV1,
            (false, Some(v)) if v >= 4 => Self::FlagsTyped,
            (false, _) => Self::Flags,
        }
    }
}

/// Properties known from the store, which the request's own properties override.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stored<'a> {
    /// The person's properties (a JSON object), when the distinct id has a person.
    pub person: Option<&'a str>,
    /// `{group type: {properties}}` of the request's groups.
    pub groups: Option<&'a str>,
}

pub(super) fn parse_object(text: &str) -> Value {
    object_or_empty(sonic_rs::from_str(text).unwrap_or_default())
}

fn overlay(base: &mut Value, overrides: &Value) {
    if let (Some(base), Some(overrides)) = (base.as_object_mut(), overrides.as_object()) {
        for (key, value) in overrides {
            base.insert(key, value.clone());
        }
    }
}

/// The person's properties for a server evaluation: stored, then the request's, then
/// `distinct_id` when neither has it (PostHog's flags service adds it, so a condition on
/// `distinct_id` works).
pub(super) fn person_properties(stored: Option<&str>, overrides: &str, distinct_id: &str) -> Value {
    let overrides = parse_object(overrides);
    let mut person = match stored {
        Some(text) => {
            let mut person = parse_object(text);
            overlay(&mut person, &overrides);
            person
        }
        None => overrides,
    };
    if let Some(object) = person.as_object_mut() {
        if object.get(&"distinct_id").is_none() {
            object.insert("distinct_id", Value::from(distinct_id));
        }
    }
    person
}

/// `{group type: properties}` for each group of the request: stored, then the request's, then
/// `$group_key`.
pub(super) fn group_properties(groups: &Value, stored: Option<&str>, overrides: &str) -> Value {
    let stored = stored.map_or_else(Value::new_object, parse_object);
    let overrides = parse_object(overrides);
    let mut merged = Value::new_object();
    let Some(groups) = groups.as_object() else {
        return merged;
    };
    for (group_type, key) in groups {
        let mut properties = stored
            .get(group_type)
            .cloned()
            .map_or_else(Value::new_object, object_or_empty);
        if let Some(own) = overrides.get(group_type) {
            overlay(&mut properties, own);
        }
        if let Some(object) = properties.as_object_mut() {
            object.insert("$group_key", key.clone());
        }
        if let Some(object) = merged.as_object_mut() {
            object.insert(group_type, properties);
        }
    }
    merged
}

/// What an SDK reads as a flag's value: the variant, else whether it is on.
fn push_value(out: &mut String, result: &FlagResult) {
    match (&result.variant, result.enabled) {
        (Some(variant), _) => rawjson::push_string(out, variant),
        (None, true) => out.push_str("true"),
        (None, false) => out.push_str("false"),
    }
}

/// `{"key": value, …}` of the flags `keep` selects.
fn push_values(out: &mut String, results: &[(&Flag, FlagResult)], keep: impl Fn(&FlagResult) -> bool) {
    out.push('{');
    let mut first = true;
    for (flag, result) in results.iter().filter(|(_, result)| keep(result)) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&flag.json_key);
        out.push(':');
        push_value(out, result);
    }
    out.push('}');
}

/// Payloads of the flags that are on, as the JSON strings PostHog sends (SDKs parse them).
fn push_payloads(out: &mut String, results: &[(&Flag, FlagResult)]) {
    out.push('{');
    let mut first = true;
    for (flag, result) in results {
        let Some(payload) = result.payload.as_deref().filter(|_| result.enabled) else {
            continue;
        };
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&flag.json_key);
        out.push(':');
        rawjson::push_string(out, payload);
    }
    out.push('}');
}

/// One flag's entry in the v2 `flags` map; `typed` adds v4's value and config version (every
/// flag here has PostHog's first configuration format, whose value is the variant or whether
/// the flag is on).
fn push_detail(out: &mut String, flag: &Flag, result: &FlagResult, typed: bool) {
    out.push_str(r#"{"key":"#);
    out.push_str(&flag.json_key);
    out.push_str(if result.enabled {
        r#","enabled":true,"variant":"#
    } else {
        r#","enabled":false,"variant":"#
    });
    push_optional(out, result.variant.as_deref());
    out.push_str(r#","reason":{"code":""#);
    out.push_str(result.reason.code());
    out.push_str(r#"","condition_index":"#);
    push_number(out, result.condition_index.map(|i| i as i64));
    out.push_str(r#","description":"#);
    result.reason.push_description(out, result.condition_index);
    out.push_str("},");
    out.push_str(&flag.json_metadata);
    push_optional(out, result.payload.as_deref());
    if typed {
        out.push_str(r#","config_version":1},"value":"#);
        push_value(out, result);
        out.push('}');
    } else {
        out.push_str("}}");
    }
}

/// `"flags":{…}` of the v2 answer (of v4 with `typed`).
pub(super) fn push_flags(out: &mut String, results: &[(&Flag, FlagResult)], typed: bool) {
    out.push_str(r#""flags":{"#);
    for (position, (flag, result)) in results.iter().enumerate() {
        if position > 0 {
            out.push(',');
        }
        out.push_str(&flag.json_key);
        out.push(':');
        push_detail(out, flag, result, typed);
    }
    out.push('}');
}

impl FlagSet {
    /// The whole answer body in the client's `shape`.
    pub fn respond(
        &self,
        results: &[(&Flag, FlagResult)],
        shape: Shape,
        request_id: &str,
        evaluated_at_ms: i64,
    ) -> String {
        let errors = results.iter().any(|(_, result)| result.error);
        let mut out = self.answer_bytes.buffer(shape as usize, 128 + results.len() * 256);
        out.push('{');
        match shape {
            Shape::Flags | Shape::FlagsTyped => {
                push_flags(&mut out, results, shape == Shape::FlagsTyped);
                out.push_str(r#","featureFlags":"#);
                push_values(&mut out, results, |_| true);
                out.push_str(r#","featureFlagPayloads":"#);
                push_payloads(&mut out, results);
            }
            Shape::DecideV1 => {
                out.push_str(r#""featureFlags":["#);
                let on = results.iter().filter(|(_, result)| result.enabled);
                for (position, (flag, _)) in on.enumerate() {
                    if position > 0 {
                        out.push(',');
                    }
                    out.push_str(&flag.json_key);
                }
                out.push(']');
            }
            Shape::DecideV2 => {
                out.push_str(r#""featureFlags":"#);
                push_values(&mut out, results, |result| result.enabled);
            }
            Shape::DecideV3 => {
                out.push_str(r#""featureFlags":"#);
                push_values(&mut out, results, |_| true);
                out.push_str(r#","featureFlagPayloads":"#);
                push_payloads(&mut out, results);
            }
        }
        if matches!(shape, Shape::Flags | Shape::FlagsTyped | Shape::DecideV3) {
            out.push_str(r#","errorsWhileComputingFlags":"#);
            out.push_str(if errors { "true" } else { "false" });
        }
        out.push_str(r#","requestId":"#);
        rawjson::push_string(&mut out, request_id);
        out.push_str(r#","evaluatedAt":"#);
        push_number(&mut out, Some(evaluated_at_ms));
        out.push('}');
        self.answer_bytes.saw(shape as usize, &out);
        out
    }
}
