//! Feature flags: every flag hogflare serves, from Hogflare's `HOGFLARE_FEATURE_FLAGS` and from a
//! PostHog local-evaluation document, compiled into one set and evaluated for a user in one call.

mod bucketing;
mod compile;
#[cfg(test)]
mod continuity_tests;
mod dates;
mod evaluate;
mod hogflare;
mod load;
mod model;
mod property;
mod request;
#[cfg(test)]
mod request_tests;
mod respond;
mod result;
#[cfg(test)]
mod rules_tests;
mod semver;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use sonic_rs::Value;

pub use bucketing::hash;
pub use compile::Flag;
use evaluate::{Context, Evaluation};
pub use evaluate::{FlagResult, Reason};
use model::FlagDefinition;
pub use request::{token_refusal, BodyError, FlagsBody, MISSING_DISTINCT_ID};
use respond::parse_object;
pub use respond::{Shape, Stored};

use super::rawjson;

/// Whether the request's evaluation environments leave the flag out: it has tags, the request
/// names environments, and none of them is a tag of the flag.
fn outside_environments(flag: &Flag, environments: Option<&[String]>) -> bool {
    match (environments, flag.definition.evaluation_contexts()) {
        (Some(wanted), Some(tags)) => {
            !wanted.is_empty() && !tags.is_empty() && !tags.iter().any(|tag| wanted.contains(tag))
        }
        _ => false,
    }
}

/// Every flag, compiled.
#[derive(Debug, Default)]
pub struct FlagSet {
    flags: Vec<Flag>,
    by_key: HashMap<String, usize>,
    /// Flags the SDKs can evaluate themselves (Hogflare's `salt` and per-condition variants
    /// they cannot).
    servable: Vec<bool>,
    group_types: BTreeMap<u8, String>,
    cohorts: HashMap<String, compile::CohortNode>,
    raw_cohorts: BTreeMap<String, Value>,
    /// Flags that depend, directly or through others, on a flag that is not there or on
    /// themselves: PostHog answers them `missing_dependency` whatever their conditions say.
    broken: Vec<bool>,
    /// The longest answer written so far, per shape: the next one's buffer starts at that size
    /// instead of growing (and copying itself) on the way.
    answer_bytes: AnswerSizes,
}

/// How long the answers of one flag set are, per shape (`respond`'s five, then
/// `evaluate_json`'s).
#[derive(Debug, Default)]
pub(super) struct AnswerSizes([AtomicUsize; 6]);

impl AnswerSizes {
    /// Not more than this is reserved on a hint: one huge answer must not make every later one
    /// reserve as much.
    const MOST: usize = 1 << 20;

    pub(super) fn buffer(&self, slot: usize, estimate: usize) -> String {
        String::with_capacity(estimate.max(self.0[slot].load(Ordering::Relaxed)))
    }

    pub(super) fn saw(&self, slot: usize, answer: &str) {
        self.0[slot].fetch_max(answer.len().min(Self::MOST), Ordering::Relaxed);
    }
}

/// `evaluate_json`'s slot among the answer sizes.
const EVALUATION_JSON: usize = 5;

/// Who a flag evaluation is for. JSON arguments are objects (anything else reads as `{}`).
#[derive(Debug, Default)]
pub struct Request<'a> {
    pub distinct_id: &'a str,
    pub person_properties: &'a str,
    pub groups: &'a str,
    pub group_properties: &'a str,
    pub anon_distinct_id: Option<&'a str>,
    /// Experience continuity's stored hash keys for the request's persons.
    pub hash_key_overrides: Option<&'a HashMap<String, String>>,
    pub device_id: Option<&'a str>,
    pub flag_keys: Option<&'a [String]>,
    pub environments: Option<&'a [String]>,
    /// For a server's evaluation: what the store knows, which `person_properties` and
    /// `group_properties` override (and `distinct_id` joins the person's properties). Without
    /// it, the request's properties are all there is.
    pub stored: Option<Stored<'a>>,
}

impl FlagSet {
    pub(crate) fn has_broken_dependency(&self, index: usize) -> bool {
        self.broken.get(index).copied().unwrap_or(false)
    }

    pub fn group_type(&self, index: u8) -> Option<&str> {
        self.group_types.get(&index).map(String::as_str)
    }

    pub fn group_type_mapping(&self) -> &BTreeMap<u8, String> {
        &self.group_types
    }

    pub(crate) fn index_of(&self, key: &str) -> Option<usize> {
        self.by_key.get(key).copied().or_else(|| {
            // PostHog's stored flag dependencies name the flag by id.
            let id: i64 = key.parse().ok()?;
            self.flags.iter().position(|flag| flag.definition.id == Some(id))
        })
    }

    pub fn len(&self) -> usize {
        self.flags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.flags.iter().map(|flag| flag.definition.key.as_str())
    }

    pub fn has_active_flags(&self) -> bool {
        self.flags
            .iter()
            .any(|flag| flag.definition.active && !flag.definition.deleted)
    }

    /// The active flags with experience continuity, when the request evaluates one of them: the
    /// flags whose hash keys the store is asked for (and, with `$anon_distinct_id`, remembers).
    pub fn continuity_keys(&self, request: &Request<'_>) -> Vec<&str> {
        let continuity = |flag: &&Flag| {
            let definition = &flag.definition;
            definition.ensure_experience_continuity && definition.active && !definition.deleted
        };
        let asked = self.flags.iter().filter(continuity).any(|flag| {
            !outside_environments(flag, request.environments)
                && request.flag_keys.is_none_or(|keys| keys.contains(&flag.definition.key))
        });
        if !asked {
            return Vec::new();
        }
        self.flags
            .iter()
            .filter(continuity)
            .map(|flag| flag.definition.key.as_str())
            .collect()
    }

    /// Evaluate every flag the request asks for; `(flag, result)` in definition order.
    pub fn evaluate(&self, request: &Request<'_>, now: DateTime<Utc>) -> Vec<(&Flag, FlagResult)> {
        let groups = parse_object(request.groups);
        let (person, group_properties) = match request.stored {
            Some(stored) => (
                respond::person_properties(stored.person, request.person_properties, request.distinct_id),
                respond::group_properties(&groups, stored.groups, request.group_properties),
            ),
            None => (
                parse_object(request.person_properties),
                parse_object(request.group_properties),
            ),
        };
        let context = Context {
            distinct_id: request.distinct_id,
            person: &person,
            groups: &groups,
            group_properties: &group_properties,
            anon_distinct_id: request.anon_distinct_id,
            hash_key_overrides: request.hash_key_overrides,
            device_id: request.device_id,
            now,
        };
        let mut evaluation = Evaluation::new(self, &context);
        // A flag the request's environments leave out is off for the flags that depend on it,
        // as PostHog seeds it, rather than evaluated for them.
        if request.environments.is_some_and(|wanted| !wanted.is_empty()) {
            for (index, flag) in self.flags.iter().enumerate() {
                if outside_environments(flag, request.environments) {
                    evaluation.assume_off(index);
                }
            }
        }
        let mut out = Vec::with_capacity(self.flags.len());
        for (index, flag) in self.flags.iter().enumerate() {
            let key = flag.definition.key.as_str();
            if outside_environments(flag, request.environments)
                || request.flag_keys.is_some_and(|keys| !keys.iter().any(|k| k == key))
            {
                continue;
            }
            out.push((flag, evaluation.flag(index)));
        }
        out
    }

    /// The evaluation as the `/flags?v=2` body's `flags` and `errorsWhileComputingFlags`.
    pub fn evaluate_json(&self, request: &Request<'_>, now: DateTime<Utc>) -> String {
        let results = self.evaluate(request, now);
        let mut out = self.answer_bytes.buffer(EVALUATION_JSON, 64 + results.len() * 192);
        out.push('{');
        respond::push_flags(&mut out, &results, false);
        let errors = results.iter().any(|(_, result)| result.error);
        out.push_str(r#","errorsWhileComputingFlags":"#);
        out.push_str(if errors { "true}" } else { "false}" });
        self.answer_bytes.saw(EVALUATION_JSON, &out);
        out
    }

    /// The answer to `GET …/feature_flags/<key or id>/remote_config`: the `"true"` payload of a
    /// remote config flag as a JSON string, as PostHog stores payloads (`null` without one);
    /// `None` when no remote config flag has that key or id.
    pub fn remote_config_payload(&self, key_or_id: &str) -> Option<String> {
        let flag = if let Some(&index) = self.by_key.get(key_or_id) {
            &self.flags[index]
        } else {
            let id: i64 = key_or_id.parse().ok()?;
            self.flags.iter().find(|flag| flag.definition.id == Some(id))?
        };
        if !flag.definition.is_remote_configuration || flag.definition.deleted {
            return None;
        }
        Some(
            flag.payloads
                .get("true")
                .map_or_else(|| "null".to_owned(), |payload| rawjson::string_literal(payload)),
        )
    }

    /// PostHog's local-evaluation document. A flag the SDKs cannot evaluate themselves (a
    /// Hogflare `salt` they do not know, variants per condition) is marked as PostHog marks a
    /// flag with experience continuity, which both server SDKs take as "ask /flags": left out,
    /// it would be missing from their answers for every flag (`get_all_flags`), which ask
    /// `/flags` only for a flag they hold and cannot decide.
    pub fn definitions_json(&self) -> String {
        let flags: Vec<Cow<'_, FlagDefinition>> = self
            .flags
            .iter()
            .zip(&self.servable)
            .map(|(flag, servable)| {
                if *servable {
                    Cow::Borrowed(&flag.definition)
                } else {
                    Cow::Owned(FlagDefinition {
                        ensure_experience_continuity: true,
                        ..flag.definition.clone()
                    })
                }
            })
            .collect();
        let mapping: BTreeMap<String, &str> = self
            .group_types
            .iter()
            .map(|(index, name)| (index.to_string(), name.as_str()))
            .collect();
        let mut document = String::from(r#"{"flags":"#);
        document.push_str(&sonic_rs::to_string(&flags).unwrap_or_else(|_| "[]".into()));
        document.push_str(r#","group_type_mapping":"#);
        document.push_str(&sonic_rs::to_string(&mapping).unwrap_or_else(|_| "{}".into()));
        document.push_str(r#","cohorts":"#);
        document.push_str(&sonic_rs::to_string(&self.raw_cohorts).unwrap_or_else(|_| "{}".into()));
        document.push('}');
        document
    }
}

fn push_number(out: &mut String, number: Option<i64>) {
    match number {
        Some(number) => out.push_str(itoa::Buffer::new().format(number)),
        None => out.push_str("null"),
    }
}

fn push_optional(out: &mut String, text: Option<&str>) {
    match text {
        Some(text) => rawjson::push_string(out, text),
        None => out.push_str("null"),
    }
}
