//! Flag definitions as PostHog stores them (the local-evaluation document). Hogflare's own flag
//! format is turned into them too (in `hogflare`), so both sources compile the same way and the
//! definitions endpoint can serve every flag as a PostHog flag object.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sonic_rs::Value;

pub use super::hogflare::from_hogflare;

fn yes() -> bool {
    true
}

#[allow(clippy::ref_option)] // serde's `serialize_with` hands over `&Option<String>`
fn string_or_empty<S: serde::Serializer>(value: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(value.as_deref().unwrap_or_default())
}

// PostHog's flag object, field for field: its switches are booleans there.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FlagDefinition {
    #[serde(default)]
    pub id: Option<i64>,
    /// PostHog's name is the flag's description, a string even when empty: typed SDKs
    /// (posthog-android's local evaluation) declare it so.
    #[serde(default, serialize_with = "string_or_empty")]
    pub name: Option<String>,
    pub key: String,
    #[serde(default)]
    pub filters: Filters,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    pub ensure_experience_continuity: bool,
    /// A remote config flag: server SDKs read its `"true"` payload with `getRemoteConfigPayload`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_remote_configuration: bool,
    #[serde(default)]
    pub version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub bucketing_identifier: Option<String>,
    /// Environments the flag is evaluated in; none means everywhere.
    #[serde(default, alias = "evaluation_environments")]
    pub evaluation_tags: Option<Vec<String>>,
    /// The same, under the name PostHog has given them since March 2026; it wins when both are
    /// there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation_contexts: Option<Vec<String>>,
    /// Where the flag may be evaluated (`all`, `server`, `client`): the server SDKs leave a
    /// `client` flag out of their local evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation_runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<i64>,
}

impl FlagDefinition {
    /// The environments (contexts) the flag is evaluated in, whichever name they came under.
    pub fn evaluation_contexts(&self) -> Option<&Vec<String>> {
        self.evaluation_contexts.as_ref().or(self.evaluation_tags.as_ref())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Filters {
    #[serde(default)]
    pub groups: Vec<ConditionDefinition>,
    #[serde(default)]
    pub multivariate: Option<Multivariate>,
    #[serde(default)]
    pub aggregation_group_type_index: Option<u8>,
    /// Variant (or `"true"`) → payload, as a JSON-encoded string.
    #[serde(default)]
    pub payloads: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub super_groups: Option<Vec<ConditionDefinition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_enrollment: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout: Option<Holdout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_exit: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConditionDefinition {
    #[serde(default)]
    pub properties: Option<Vec<PropertyFilter>>,
    #[serde(default)]
    pub rollout_percentage: Option<f64>,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "ConditionAggregation::is_flags")]
    pub aggregation_group_type_index: ConditionAggregation,
}

/// Whom a condition is about: absent, whom its flag is about; `null`, the person, whatever the
/// flag's (a flag that targets persons and groups); a number, that group type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConditionAggregation {
    #[default]
    Flags,
    Person,
    Group(u8),
}

impl ConditionAggregation {
    #[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
    fn is_flags(&self) -> bool {
        *self == Self::Flags
    }

    /// The group type index the condition aggregates by, given its flag's.
    pub fn resolve(self, flag: Option<u8>) -> Option<u8> {
        match self {
            Self::Flags => flag,
            Self::Person => None,
            Self::Group(index) => Some(index),
        }
    }
}

impl Serialize for ConditionAggregation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Group(index) => serializer.serialize_u8(*index),
            _ => serializer.serialize_none(),
        }
    }
}

impl<'de> Deserialize<'de> for ConditionAggregation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Option::<u8>::deserialize(deserializer)?.map_or(Self::Person, Self::Group))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Multivariate {
    #[serde(default)]
    pub variants: Vec<VariantDefinition>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VariantDefinition {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub rollout_percentage: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Holdout {
    pub id: i64,
    #[serde(default)]
    pub exclusion_percentage: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PropertyFilter {
    pub key: String,
    #[serde(default)]
    pub value: Value,
    #[serde(default, alias = "op")]
    pub operator: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_type_index: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negation: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency_chain: Option<Vec<String>>,
}

/// PostHog's local-evaluation document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Definitions {
    #[serde(default)]
    pub flags: Vec<Value>,
    #[serde(default)]
    pub group_type_mapping: BTreeMap<String, Value>,
    #[serde(default)]
    pub cohorts: BTreeMap<String, Value>,
}

/// A typed definition from a JSON value. Values go back through text: sonic-rs cannot read a
/// `Value` field out of another `Value`.
pub fn from_json<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, String> {
    let text = sonic_rs::to_string(value).map_err(|err| err.to_string())?;
    sonic_rs::from_str(&text).map_err(|err| err.to_string())
}
