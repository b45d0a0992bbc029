//! Flag definitions compiled for evaluation: operators parsed and regexes built once, cohorts
//! resolved to property trees, and the settings evaluation reads kept at hand.

use std::collections::HashMap;

use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use super::model::{ConditionDefinition, FlagDefinition, PropertyFilter};
use super::property::{text_of, Operator};
use crate::core::rawjson;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Person,
    Group(u8),
}

#[derive(Debug, Clone)]
pub enum Filter {
    Property {
        key: String,
        source: Source,
        operator: Operator,
        negated: bool,
    },
    /// In (or, `positive == false`, not in) a cohort.
    Cohort { id: String, positive: bool },
    /// Another flag evaluates to `expected` (`true`: any enabled value, `false`: disabled, a
    /// string: that variant).
    Flag { key: String, expected: Value },
}

#[derive(Debug, Clone)]
pub struct Condition {
    pub filters: Vec<Filter>,
    pub rollout: Option<f64>,
    pub variant: Option<String>,
    pub aggregation: Option<u8>,
}

/// A cohort's property tree: AND/OR groups of filters, each possibly negated.
#[derive(Debug, Clone)]
pub enum CohortNode {
    Group { all: bool, nodes: Vec<CohortNode> },
    Filter(Filter),
}

#[derive(Debug, Clone)]
pub struct Flag {
    pub definition: FlagDefinition,
    pub conditions: Vec<Condition>,
    pub super_condition: Option<Condition>,
    pub variants: Vec<(String, f64)>,
    pub payloads: HashMap<String, String>,
    /// Hogflare's per-flag salt, appended to the bucketing id.
    pub salt: String,
    /// The key as a JSON string, and the v2 answer's `"metadata":{…,"payload":` up to the
    /// payload: written once here rather than escaped and formatted again in every answer.
    pub json_key: String,
    pub json_metadata: String,
}

/// `"metadata":{"id":…,"version":…,"description":…,"payload":` of a flag's v2 entry.
fn metadata_prefix(definition: &FlagDefinition) -> String {
    let mut out = String::from(r#""metadata":{"id":"#);
    super::push_number(&mut out, definition.id);
    out.push_str(r#","version":"#);
    // PostHog's flag service answers 0 for a flag with no version.
    super::push_number(&mut out, Some(definition.version.unwrap_or(0)));
    out.push_str(r#","description":"#);
    super::push_optional(&mut out, definition.description.as_deref());
    out.push_str(r#","payload":"#);
    out
}

fn filter(definition: &PropertyFilter, flag_aggregation: Option<u8>) -> Result<Filter, String> {
    let operator = definition.operator.as_deref().unwrap_or("exact");
    let negated = definition.negation.unwrap_or(false);
    match definition.kind.as_deref().unwrap_or("person") {
        "cohort" => Ok(Filter::Cohort {
            id: text_of(&definition.value).into_owned(),
            positive: operator != "not_in" && !negated,
        }),
        // A dependency with another operator, or no value, is malformed: PostHog logs it and
        // lets it match nothing (a null `expected` matches no answer).
        "flag" => Ok(Filter::Flag {
            key: definition.key.clone(),
            expected: if operator == "flag_evaluates_to" {
                definition.value.clone()
            } else {
                Value::new_null()
            },
        }),
        kind => {
            let source = match (kind, definition.group_type_index.or(flag_aggregation)) {
                ("group", Some(index)) => Source::Group(index),
                ("group", None) => return Err(format!("group filter on {:?} has no group_type_index", definition.key)),
                _ => Source::Person,
            };
            Ok(Filter::Property {
                key: definition.key.clone(),
                source,
                operator: Operator::compile(operator, &definition.value)?,
                negated,
            })
        }
    }
}

fn condition(definition: &ConditionDefinition, flag_aggregation: Option<u8>) -> Result<Condition, String> {
    let aggregation = definition.aggregation_group_type_index.resolve(flag_aggregation);
    let mut filters = Vec::new();
    for property in definition.properties.iter().flatten() {
        filters.push(filter(property, aggregation)?);
    }
    // Cohorts are the costliest filters: PostHog's flag service checks them last.
    filters.sort_by_key(|f| matches!(f, Filter::Cohort { .. }));
    Ok(Condition {
        filters,
        rollout: definition.rollout_percentage,
        variant: definition.variant.clone(),
        aggregation,
    })
}

pub fn flag(definition: FlagDefinition, salt: String) -> Result<Flag, String> {
    let aggregation = definition.filters.aggregation_group_type_index;
    let conditions = definition
        .filters
        .groups
        .iter()
        .enumerate()
        .map(|(index, c)| condition(c, aggregation).map_err(|err| format!("condition {}: {err}", index + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    let super_condition = match definition.filters.super_groups.as_deref() {
        Some([first, ..]) => Some(condition(first, aggregation)?),
        _ => None,
    };
    let variants: Vec<(String, f64)> = definition
        .filters
        .multivariate
        .iter()
        .flat_map(|m| m.variants.iter())
        .map(|v| (v.key.clone(), v.rollout_percentage))
        .collect();
    let payloads = definition
        .filters
        .payloads
        .iter()
        .filter(|(_, payload)| !payload.is_null())
        .map(|(key, payload)| (key.clone(), text_of(payload).into_owned()))
        .collect();
    Ok(Flag {
        json_key: rawjson::string_literal(&definition.key),
        json_metadata: metadata_prefix(&definition),
        definition,
        conditions,
        super_condition,
        variants,
        payloads,
        salt,
    })
}

/// A cohort's `{type: AND|OR, values: [...]}` tree.
pub fn cohort(value: &Value) -> Result<CohortNode, String> {
    let properties = value.get("properties").unwrap_or(value);
    node(properties)
}

fn node(value: &Value) -> Result<CohortNode, String> {
    if value.get("key").is_none() && value.get("values").is_none() {
        // A cohort with no properties holds everyone.
        return Ok(CohortNode::Group {
            all: true,
            nodes: Vec::new(),
        });
    }
    if let Some(values) = value.get("values").and_then(|v| v.as_array()) {
        let all = !value
            .get("type")
            .and_then(|t| t.as_str())
            .is_some_and(|t| t.eq_ignore_ascii_case("OR"));
        let nodes = values.iter().map(node).collect::<Result<Vec<_>, _>>()?;
        return Ok(CohortNode::Group { all, nodes });
    }
    let definition: PropertyFilter =
        super::model::from_json(value).map_err(|err| format!("invalid cohort filter: {err}"))?;
    Ok(CohortNode::Filter(filter(&definition, None)?))
}
