//! Hogflare's own flag format (`HOGFLARE_FEATURE_FLAGS`): its fields checked strictly, then
//! turned into a PostHog flag definition with its payloads, conditions and filters.

use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use super::model::{
    from_json, ConditionAggregation, ConditionDefinition, FlagDefinition, Multivariate, PropertyFilter,
    VariantDefinition,
};

/// A Hogflare payload as PostHog stores it: a JSON-encoded string. Hogflare reads a string that
/// parses as JSON as that JSON, and any other string as itself.
pub fn encoded_payload(payload: &Value) -> Value {
    match payload.as_str() {
        Some(text) if sonic_rs::from_str::<Value>(text).is_ok() => payload.clone(),
        _ => Value::from(sonic_rs::to_string(payload).unwrap_or_default().as_str()),
    }
}

/// A flag in Hogflare's format, turned into a PostHog flag object. `group_index` names a group
/// type's index. Returns the definition and the Hogflare-only settings PostHog has no field for
/// (`salt`, per-condition variant lists) as `true` when present.
pub fn from_hogflare(
    flag: &Value,
    group_index: &mut dyn FnMut(&str) -> Option<u8>,
) -> Result<(FlagDefinition, bool), String> {
    check_hogflare_types(flag)?;
    let key = flag
        .get("key")
        .and_then(|k| k.as_str())
        .filter(|k| !k.is_empty())
        .ok_or("a flag has no key")?;
    let mut definition = FlagDefinition {
        key: key.to_owned(),
        active: flag.get("active").and_then(JsonValueTrait::as_bool).unwrap_or(true),
        id: flag.get("id").and_then(JsonValueTrait::as_i64),
        version: flag.get("version").and_then(JsonValueTrait::as_i64),
        description: flag.get("description").and_then(|d| d.as_str()).map(str::to_owned),
        evaluation_tags: flag.get("evaluation_environments").and_then(strings),
        ..FlagDefinition::default()
    };
    definition.name.clone_from(&definition.description);
    let mut hogflare_only = flag.get("salt").and_then(|s| s.as_str()).is_some_and(|s| !s.is_empty());
    if let Some(filters) = flag.get("filters").filter(|f| JsonValueTrait::is_object(*f)) {
        definition.filters = from_json(filters).map_err(|err| format!("invalid filters: {err}"))?;
    }
    let group_type = flag.get("group_type").and_then(|g| g.as_str());
    let aggregation = match group_type {
        Some(name) => Some(group_index(name).ok_or_else(|| format!("unknown group type {name:?}"))?),
        None => definition.filters.aggregation_group_type_index,
    };
    definition.filters.aggregation_group_type_index = aggregation;

    let variants = flag.get("variants").and_then(|v| v.as_array());
    if let Some(variants) = variants {
        let mut list = Vec::new();
        for variant in variants {
            let key = variant
                .get("key")
                .and_then(|k| k.as_str())
                .ok_or("a variant has no key")?;
            let rollout = variant
                .get("rollout_percentage")
                .and_then(JsonValueTrait::as_f64)
                .unwrap_or(0.0);
            list.push(VariantDefinition {
                key: key.to_owned(),
                name: None,
                rollout_percentage: rollout,
            });
            if let Some(payload) = variant.get("payload").filter(|p| !p.is_null()) {
                definition
                    .filters
                    .payloads
                    .insert(key.to_owned(), encoded_payload(payload));
            }
        }
        definition.filters.multivariate = Some(Multivariate { variants: list });
    }
    if let Some(payload) = flag.get("payload").filter(|p| !p.is_null()) {
        definition
            .filters
            .payloads
            .insert("true".into(), encoded_payload(payload));
    }
    if let Some(payloads) = flag.get("variant_payloads").and_then(|p| p.as_object()) {
        for (variant, payload) in payloads {
            definition
                .filters
                .payloads
                .entry(variant.to_owned())
                .or_insert_with(|| encoded_payload(payload));
        }
    }

    let rollout = flag.get("rollout_percentage").and_then(JsonValueTrait::as_f64);
    match flag
        .get("conditions")
        .and_then(|c| c.as_array())
        .filter(|c| !c.is_empty())
    {
        Some(conditions) => {
            definition.filters.groups.clear();
            for condition in conditions {
                hogflare_only |= condition.get("variants").is_some_and(|v| !v.is_null());
                let mut properties = Vec::new();
                for filter in condition
                    .get("properties")
                    .and_then(|p| p.as_array())
                    .into_iter()
                    .flatten()
                {
                    properties.push(hogflare_filter(filter, aggregation, group_index)?);
                }
                definition.filters.groups.push(ConditionDefinition {
                    properties: Some(properties),
                    rollout_percentage: condition
                        .get("rollout_percentage")
                        .and_then(JsonValueTrait::as_f64)
                        .or(rollout),
                    variant: condition.get("variant").and_then(|v| v.as_str()).map(str::to_owned),
                    aggregation_group_type_index: ConditionAggregation::Flags,
                });
            }
        }
        None if definition.filters.groups.is_empty() => {
            definition.filters.groups.push(ConditionDefinition {
                properties: Some(Vec::new()),
                rollout_percentage: Some(rollout.unwrap_or(100.0)),
                ..ConditionDefinition::default()
            });
        }
        None => {}
    }
    Ok((definition, hogflare_only))
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Boolean,
    Integer,
    Percentage,
    List,
    Object,
}

/// Refuse a field of the wrong type rather than ignore it: a mistyped `conditions` or
/// `rollout_percentage` would otherwise turn a flag on for everyone.
fn check_fields(what: &str, value: &Value, fields: &[(&str, Kind)]) -> Result<(), String> {
    if !value.is_object() {
        return Err(format!("{what} is not an object"));
    }
    for (name, kind) in fields {
        let Some(field) = value.get(name).filter(|f| !f.is_null()) else {
            continue;
        };
        let fits = match kind {
            Kind::Text => field.is_str(),
            Kind::Boolean => field.is_boolean(),
            Kind::Integer => field.as_i64().is_some(),
            Kind::Percentage => field.as_f64().is_some_and(|p| (0.0..=100.0).contains(&p)),
            Kind::List => field.is_array(),
            Kind::Object => field.is_object(),
        };
        if !fits {
            let expected = match kind {
                Kind::Text => "a string",
                Kind::Boolean => "true or false",
                Kind::Integer => "an integer",
                Kind::Percentage => "a number from 0 to 100",
                Kind::List => "a list",
                Kind::Object => "an object",
            };
            return Err(format!("{what}: `{name}` must be {expected}, not {field}"));
        }
    }
    Ok(())
}

fn check_hogflare_types(flag: &Value) -> Result<(), String> {
    use Kind::{Boolean, Integer, List, Object, Percentage, Text};
    check_fields(
        "the flag",
        flag,
        &[
            ("key", Text),
            ("active", Boolean),
            ("type", Text),
            ("rollout_percentage", Percentage),
            ("variants", List),
            ("variant_payloads", Object),
            ("conditions", List),
            ("group_type", Text),
            ("evaluation_environments", List),
            ("salt", Text),
            ("id", Integer),
            ("version", Integer),
            ("description", Text),
            ("filters", Object),
        ],
    )?;
    if let Some(kind) = flag.get("type").and_then(|t| t.as_str()) {
        if kind != "boolean" && kind != "multivariate" {
            return Err(format!("`type` must be \"boolean\" or \"multivariate\", not {kind:?}"));
        }
    }
    for variant in flag.get("variants").and_then(|v| v.as_array()).into_iter().flatten() {
        check_fields(
            "a variant",
            variant,
            &[("key", Text), ("rollout_percentage", Percentage)],
        )?;
    }
    for (index, condition) in flag
        .get("conditions")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let what = format!("condition {}", index + 1);
        check_fields(
            &what,
            condition,
            &[
                ("properties", List),
                ("rollout_percentage", Percentage),
                ("variant", Text),
                ("variants", List),
            ],
        )?;
        for filter in condition
            .get("properties")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            check_fields(
                &what,
                filter,
                &[
                    ("key", Text),
                    ("operator", Text),
                    ("op", Text),
                    ("type", Text),
                    ("group_type", Text),
                ],
            )?;
        }
    }
    Ok(())
}

fn strings(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect())
}

/// Hogflare's filter `{key, value, type, group_type, operator|op}`, as PostHog's.
fn hogflare_filter(
    filter: &Value,
    flag_group: Option<u8>,
    group_index: &mut dyn FnMut(&str) -> Option<u8>,
) -> Result<PropertyFilter, String> {
    let key = filter
        .get("key")
        .and_then(|k| k.as_str())
        .ok_or("a condition filter has no key")?;
    let operator = filter
        .get("operator")
        .or_else(|| filter.get("op"))
        .and_then(|o| o.as_str())
        .unwrap_or("eq")
        .to_ascii_lowercase();
    let mut value = filter.get("value").cloned().unwrap_or_default();
    let operator = match operator.as_str() {
        "eq" | "is" | "equals" | "in" => "exact",
        "neq" | "ne" | "not_eq" | "not_in" => "is_not",
        // Hogflare's `contains` is case-sensitive; PostHog's only case-sensitive test is a regex.
        "contains" | "not_contains" => {
            let text = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
            value = Value::from(regex::escape(&text).as_str());
            if operator == "contains" {
                "regex"
            } else {
                "not_regex"
            }
        }
        other => other,
    }
    .to_owned();
    let group = match (flag_group, filter.get("type").and_then(|t| t.as_str())) {
        // A group flag reads every filter from its group.
        (Some(index), _) => Some(index),
        (None, Some("group")) => {
            let name = filter
                .get("group_type")
                .and_then(|g| g.as_str())
                .ok_or("a group filter has no group_type")?;
            Some(group_index(name).ok_or_else(|| format!("unknown group type {name:?}"))?)
        }
        _ => None,
    };
    Ok(PropertyFilter {
        key: key.to_owned(),
        value,
        operator: Some(operator),
        kind: Some(if group.is_some() { "group" } else { "person" }.to_owned()),
        group_type_index: group,
        ..PropertyFilter::default()
    })
}
