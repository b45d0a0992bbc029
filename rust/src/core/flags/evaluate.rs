//! One user's flags, as PostHog's flag service decides them: holdouts, early-access enrollment,
//! conditions in order with their rollouts, variants by hash, and the reason for each answer.

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sonic_rs::{JsonValueTrait, Value};

use super::bucketing::{hash, in_rollout, variant_of};
use super::compile::{CohortNode, Condition, Filter, Flag, Source};
use super::result::keep_better;
pub use super::result::{FlagResult, Reason};
use super::FlagSet;
use crate::core::person_initial::INITIAL_NAMES;

/// Who is asking, and what is known about them.
pub struct Context<'a> {
    pub distinct_id: &'a str,
    pub person: &'a Value,
    /// `{group type: group key}`
    pub groups: &'a Value,
    /// `{group type: properties}`
    pub group_properties: &'a Value,
    pub anon_distinct_id: Option<&'a str>,
    /// Experience continuity's stored hash keys, `{flag key: hash key}`.
    pub hash_key_overrides: Option<&'a HashMap<String, String>>,
    pub device_id: Option<&'a str>,
    pub now: DateTime<Utc>,
}

/// A person property, with PostHog's fallback of `$initial_x` to `x` when the initial one is
/// missing, for the initial properties PostHog derives (not any key that starts so).
fn person_property<'v>(person: &'v Value, key: &str) -> Option<&'v Value> {
    person.get(key).or_else(|| {
        if !INITIAL_NAMES.contains(&key) {
            return None;
        }
        let rest = key.strip_prefix("$initial_")?;
        person.get(&format!("${rest}")).or_else(|| person.get(rest))
    })
}

pub struct Evaluation<'s, 'c> {
    set: &'s FlagSet,
    context: &'c Context<'c>,
    done: Vec<Option<FlagResult>>,
    visiting: Vec<usize>,
    /// Cohorts being decided: one that reaches itself through its filters cannot be.
    cohorts_visiting: Vec<String>,
    /// A flag the one being decided depends on is missing or part of a cycle.
    missing_dependency: bool,
}

impl<'s, 'c> Evaluation<'s, 'c> {
    pub fn new(set: &'s FlagSet, context: &'c Context<'c>) -> Self {
        Self {
            set,
            context,
            done: vec![None; set.flags.len()],
            visiting: Vec::new(),
            cohorts_visiting: Vec::new(),
            missing_dependency: false,
        }
    }

    fn group_key(&self, index: u8) -> Option<Cow<'c, str>> {
        let name = self.set.group_type(index)?;
        let key = self.context.groups.get(name)?;
        // A group is named by a non-empty string or a number; anything else names none.
        match key.as_str() {
            Some(text) => (!text.is_empty()).then_some(Cow::Borrowed(text)),
            None => key.is_number().then(|| Cow::Owned(key.to_string())),
        }
    }

    /// Who the flag is bucketed by: the group key for a group condition, else the device id,
    /// the hash key stored for the flag, the anonymous id (experience continuity) or the
    /// distinct id, as the flag says.
    fn identifier(&self, flag: &Flag, aggregation: Option<u8>) -> Option<Cow<'c, str>> {
        self.bucketed_by(flag, aggregation, true)
    }

    /// `identifier`, with or without the stored hash keys: a holdout, as PostHog hashes it,
    /// looks at the request only.
    fn bucketed_by(&self, flag: &Flag, aggregation: Option<u8>, stored: bool) -> Option<Cow<'c, str>> {
        if let Some(index) = aggregation {
            return self.group_key(index);
        }
        let context = self.context;
        if flag.definition.bucketing_identifier.as_deref() == Some("device_id") {
            if let Some(device) = context.device_id.filter(|d| !d.is_empty()) {
                return Some(Cow::Borrowed(device));
            }
        }
        let overrides = context.hash_key_overrides.filter(|_| stored);
        if let Some(hash_key) = overrides.and_then(|stored| stored.get(&flag.definition.key)) {
            return Some(Cow::Borrowed(hash_key));
        }
        if flag.definition.ensure_experience_continuity {
            if let Some(anon) = context.anon_distinct_id.filter(|a| !a.is_empty()) {
                return Some(Cow::Borrowed(anon));
            }
        }
        // An empty distinct id names no one, as a missing group does.
        (!context.distinct_id.is_empty()).then_some(Cow::Borrowed(context.distinct_id))
    }

    /// Answer a flag off without evaluating it, for the flags that depend on it.
    pub fn assume_off(&mut self, index: usize) {
        self.done[index] = Some(FlagResult::off(Reason::NoConditionMatch, None));
    }

    /// Evaluate one flag (by index), caching the answer for flags that depend on it.
    pub fn flag(&mut self, index: usize) -> FlagResult {
        if let Some(done) = &self.done[index] {
            return done.clone();
        }
        if self.visiting.contains(&index) {
            let mut result = FlagResult::off(Reason::MissingDependency, None);
            result.error = true;
            return result;
        }
        self.visiting.push(index);
        let outer = std::mem::take(&mut self.missing_dependency);
        let flag = &self.set.flags[index];
        let mut result = if flag.definition.active && !flag.definition.deleted && self.set.has_broken_dependency(index)
        {
            self.missing_dependency = true;
            FlagResult::off(Reason::MissingDependency, None)
        } else {
            self.decide(flag)
        };
        if std::mem::replace(&mut self.missing_dependency, outer) && !result.enabled {
            result = FlagResult::off(Reason::MissingDependency, None);
            result.error = true;
        }
        self.visiting.pop();
        self.done[index] = Some(result.clone());
        result
    }

    fn decide(&mut self, flag: &Flag) -> FlagResult {
        let definition = &flag.definition;
        if !definition.active || definition.deleted {
            return FlagResult::off(Reason::FlagDisabled, None);
        }
        let aggregation = definition.filters.aggregation_group_type_index;
        let enrollment = definition.filters.feature_enrollment == Some(true);
        if enrollment {
            let key = format!("$feature_enrollment/{}", definition.key);
            if let Some(value) = person_property(self.context.person, &key) {
                // Exactly `true` or `"true"`: an early-access opt-in is written by posthog-js.
                let enabled = value.as_bool() == Some(true) || value.as_str() == Some("true");
                let mut result = FlagResult::off(Reason::SuperConditionValue, Some(0));
                result.enabled = enabled;
                result.payload = enabled.then(|| flag.payloads.get("true").cloned()).flatten();
                return result;
            }
        }
        // Legacy super groups decide only flags that are not early-access features.
        if let Some(condition) = flag.super_condition.as_ref().filter(|_| !enrollment) {
            let named = condition.filters.iter().any(|f| match f {
                Filter::Property { key, .. } => person_property(self.context.person, key).is_some(),
                _ => false,
            });
            if named {
                let (matched, error) = self.condition_matches(condition, aggregation);
                let mut result = FlagResult::off(Reason::SuperConditionValue, Some(0));
                result.error = error;
                let identifier = self.identifier(flag, aggregation);
                if matched && identifier.is_some_and(|id| in_rollout(flag, condition, &id, &mut None)) {
                    result.enabled = true;
                    result.payload = flag.payloads.get("true").cloned();
                }
                return result;
            }
        }

        if let Some(holdout) = &definition.filters.holdout {
            if let Some(identifier) = self.bucketed_by(flag, aggregation, false) {
                if hash(&["holdout-", &identifier]) <= holdout.exclusion_percentage / 100.0 {
                    let mut result = FlagResult::off(Reason::HoldoutConditionValue, None);
                    result.enabled = true;
                    let variant = format!("holdout-{}", holdout.id);
                    result.payload = flag.payloads.get(&variant).cloned();
                    result.variant = Some(variant);
                    return result;
                }
            }
        }
        let mut best: Option<FlagResult> = None;
        let mut error = false;
        // The rollout hash depends on the flag and the identifier only (one per aggregation):
        // conditions that fall through to the next share it.
        let mut hashed: Option<(Option<u8>, f64)> = None;
        for (index, condition) in flag.conditions.iter().enumerate() {
            let aggregation = condition.aggregation;
            let Some(identifier) = self.identifier(flag, aggregation) else {
                // A group condition without its group names its condition; an empty distinct id
                // names no one, and the flag service no condition.
                let named = aggregation.map(|_| index);
                keep_better(&mut best, FlagResult::off(Reason::NoGroupType, named));
                continue;
            };
            // A person condition bucketed by device, without a device id, is skipped before
            // its properties are looked at, as the flag service does.
            if self.lacks_device_id(flag, aggregation) {
                keep_better(&mut best, FlagResult::off(Reason::OutOfRolloutBound, Some(index)));
                continue;
            }
            let (matched, condition_error) = self.condition_matches(condition, aggregation);
            error |= condition_error;
            if !matched {
                keep_better(&mut best, FlagResult::off(Reason::NoConditionMatch, Some(index)));
                continue;
            }
            if !in_rollout(flag, condition, &identifier, &mut hashed) {
                keep_better(&mut best, FlagResult::off(Reason::OutOfRolloutBound, Some(index)));
                if definition.filters.early_exit == Some(true) {
                    break;
                }
                continue;
            }
            let variant = condition
                .variant
                .as_ref()
                .filter(|v| flag.variants.iter().any(|(key, _)| key == *v))
                .cloned()
                .or_else(|| variant_of(flag, &identifier));
            let payload = flag.payloads.get(variant.as_deref().unwrap_or("true")).cloned();
            return FlagResult {
                enabled: true,
                variant,
                reason: Reason::ConditionMatch,
                condition_index: Some(index),
                payload,
                error,
            };
        }
        let mut best = best.unwrap_or_else(|| FlagResult::off(Reason::NoConditionMatch, None));
        best.error = error;
        best
    }

    /// A person condition of a flag bucketed by device has no one to bucket without a device id.
    fn lacks_device_id(&self, flag: &Flag, aggregation: Option<u8>) -> bool {
        aggregation.is_none()
            && flag.definition.bucketing_identifier.as_deref() == Some("device_id")
            && self.context.device_id.is_none_or(str::is_empty)
    }

    /// Whether every filter of a condition holds, and whether deciding needed something missing.
    fn condition_matches(&mut self, condition: &Condition, aggregation: Option<u8>) -> (bool, bool) {
        let mut error = false;
        for filter in &condition.filters {
            let (matched, filter_error) = self.filter_matches(filter, aggregation);
            error |= filter_error;
            if !matched {
                return (false, error);
            }
        }
        (true, error)
    }

    fn properties_for(&self, source: Source) -> Option<&'c Value> {
        match source {
            Source::Person => Some(self.context.person),
            Source::Group(index) => self.context.group_properties.get(self.set.group_type(index)?),
        }
    }

    fn filter_matches(&mut self, filter: &Filter, aggregation: Option<u8>) -> (bool, bool) {
        match filter {
            Filter::Property {
                key,
                source,
                operator,
                negated,
            } => {
                let source = match (source, aggregation) {
                    (Source::Person, Some(index)) => Source::Group(index),
                    (source, _) => *source,
                };
                let value = self.properties_for(source).and_then(|props| match source {
                    Source::Person => person_property(props, key),
                    Source::Group(_) => props.get(key),
                });
                match operator.outcome(value, self.context.now) {
                    Some(matched) => (matched != *negated, false),
                    None => (false, true),
                }
            }
            Filter::Cohort { id, positive } => match self.set.cohorts.get(id) {
                Some(_) if self.cohorts_visiting.contains(id) => (false, true),
                Some(tree) => {
                    let tree = tree.clone();
                    self.cohorts_visiting.push(id.clone());
                    let (matched, error) = self.cohort_matches(&tree);
                    self.cohorts_visiting.pop();
                    (matched == *positive, error)
                }
                None => (false, true),
            },
            Filter::Flag { key, expected } => {
                let Some(index) = self.set.index_of(key) else {
                    self.missing_dependency = true;
                    return (false, true);
                };
                let result = self.flag(index);
                if result.reason == Reason::MissingDependency {
                    self.missing_dependency = true;
                    return (false, true);
                }
                let matched = match (expected.as_bool(), expected.as_str()) {
                    (Some(true), _) => result.enabled,
                    (Some(false), _) => !result.enabled,
                    (None, Some(variant)) => result.variant.as_deref() == Some(variant),
                    _ => false,
                };
                (matched, result.error)
            }
        }
    }

    fn cohort_matches(&mut self, node: &CohortNode) -> (bool, bool) {
        match node {
            CohortNode::Filter(filter) => self.filter_matches(filter, None),
            CohortNode::Group { all, nodes } => {
                if nodes.is_empty() {
                    return (true, false);
                }
                let mut error = false;
                for child in nodes {
                    let (matched, child_error) = self.cohort_matches(child);
                    error |= child_error;
                    if matched != *all {
                        return (matched, error);
                    }
                }
                (*all, error)
            }
        }
    }
}

/// `value` read as an object, or an empty one.
pub fn object_or_empty(value: Value) -> Value {
    if value.is_object() {
        value
    } else {
        Value::new_object()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_properties_fall_back() {
        let person: Value = sonic_rs::from_str(r#"{"$browser":"Chrome","utm_source":"x"}"#).unwrap();
        assert_eq!(
            person_property(&person, "$initial_browser").and_then(|v| v.as_str()),
            Some("Chrome")
        );
        assert_eq!(
            person_property(&person, "$initial_utm_source").and_then(|v| v.as_str()),
            Some("x")
        );
        // Only the initial properties PostHog derives fall back; a custom one does not.
        let person: Value = sonic_rs::from_str(r#"{"plan":"pro","$geoip_country_code":"US"}"#).unwrap();
        assert!(person_property(&person, "$initial_plan").is_none());
        assert!(person_property(&person, "$initial_geoip_country_code").is_none());
    }
}
