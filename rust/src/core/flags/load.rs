//! Both sources read into one set: the flags file's PostHog document and Hogflare's
//! `HOGFLARE_FEATURE_FLAGS`, their group types numbered, each flag compiled on its own so a bad
//! one is reported and left out, and the flags whose dependencies cannot be decided marked.

use std::collections::BTreeMap;

use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use super::compile;
use super::model::{self, Definitions, FlagDefinition};
use super::FlagSet;

impl FlagSet {
    /// Compile both sources. Problems come back as messages; a bad flag is left out, a document
    /// that cannot be read contributes nothing, and neither stops the other flags.
    pub fn compile(hogflare: Option<&str>, definitions: Option<&str>) -> (Self, Vec<String>) {
        let mut set = Self::default();
        let mut problems = Vec::new();
        let mut pending: Vec<(FlagDefinition, String, bool)> = Vec::new();

        if let Some(text) = definitions.filter(|t| !t.trim().is_empty()) {
            match read_document(text) {
                Ok(document) => {
                    set.add_group_types(&document.group_type_mapping);
                    for (id, cohort) in document.cohorts {
                        match compile::cohort(&cohort) {
                            Ok(tree) => {
                                set.cohorts.insert(id.clone(), tree);
                                set.raw_cohorts.insert(id, cohort);
                            }
                            Err(err) => problems.push(format!("flags file: cohort {id}: {err}")),
                        }
                    }
                    for flag in document.flags {
                        match model::from_json::<FlagDefinition>(&flag) {
                            Ok(definition) => pending.push((definition, String::new(), true)),
                            Err(err) => problems.push(format!("flags file: flag {}: {err}", describe(&flag))),
                        }
                    }
                }
                Err(err) => problems.push(format!("flags file: {err}")),
            }
        }
        if let Some(text) = hogflare.filter(|t| !t.trim().is_empty()) {
            match read_document(text) {
                Ok(document) => {
                    set.add_group_types(&document.group_type_mapping);
                    for flag in document.flags {
                        let mut assign = |name: &str| set.group_index(name);
                        match model::from_hogflare(&flag, &mut assign) {
                            Ok((definition, _)) if pending.iter().any(|(d, _, _)| d.key == definition.key) => {
                                problems.push(format!(
                                    "HOGFLARE_FEATURE_FLAGS: flag {:?} is also in the flags file, which wins",
                                    definition.key
                                ));
                            }
                            Ok((definition, hogflare_only)) => {
                                let salt = flag.get("salt").and_then(|s| s.as_str()).unwrap_or_default().to_owned();
                                pending.push((definition, salt, !hogflare_only));
                            }
                            Err(err) => {
                                problems.push(format!("HOGFLARE_FEATURE_FLAGS: flag {}: {err}", describe(&flag)));
                            }
                        }
                    }
                }
                Err(err) => problems.push(format!("HOGFLARE_FEATURE_FLAGS: {err}")),
            }
        }
        for (definition, salt, servable) in pending {
            let key = definition.key.clone();
            if set.by_key.contains_key(&key) {
                problems.push(format!("flag {key:?} is defined twice; the first one is used"));
                continue;
            }
            // A panic would be a bug one definition reaches: that flag is left out and reported
            // like any bad flag, instead of failing the whole set (and the server's reload).
            let compiled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compile::flag(definition, salt)))
                .unwrap_or_else(|_| Err("internal error while compiling it".to_owned()));
            match compiled {
                Ok(flag) => {
                    set.by_key.insert(key, set.flags.len());
                    set.flags.push(flag);
                    set.servable.push(servable);
                }
                Err(err) => problems.push(format!("flag {key:?}: {err}")),
            }
        }
        set.broken = set.broken_dependencies();
        (set, problems)
    }

    /// Which flags have a dependency that cannot be decided: missing, in a cycle, or broken
    /// itself.
    fn broken_dependencies(&self) -> Vec<bool> {
        #[derive(Clone, Copy, PartialEq)]
        enum State {
            New,
            Visiting,
            Done(bool),
        }
        fn visit(set: &FlagSet, index: usize, states: &mut [State]) -> bool {
            match states[index] {
                State::Done(broken) => return broken,
                State::Visiting => return true,
                State::New => {}
            }
            states[index] = State::Visiting;
            let flag = &set.flags[index];
            let mut broken = false;
            // Super groups are not read for an early-access flag, so neither are their dependencies.
            let enrollment = flag.definition.filters.feature_enrollment == Some(true);
            let super_condition = flag.super_condition.as_ref().filter(|_| !enrollment);
            for condition in flag.conditions.iter().chain(super_condition) {
                for filter in &condition.filters {
                    if let compile::Filter::Flag { key, .. } = filter {
                        broken |= set
                            .index_of(key)
                            .is_none_or(|dependency| visit(set, dependency, states));
                    }
                }
            }
            states[index] = State::Done(broken);
            broken
        }
        let mut states = vec![State::New; self.flags.len()];
        (0..self.flags.len())
            .map(|index| visit(self, index, &mut states))
            .collect()
    }

    fn add_group_types(&mut self, mapping: &BTreeMap<String, Value>) {
        for (left, right) in mapping {
            // Hogflare accepts the mapping either way round.
            let (index, name) = match (left.parse::<u8>(), right.as_str(), right.as_u64()) {
                (Ok(index), Some(name), _) => (index, name.to_owned()),
                (_, _, Some(index)) => (index as u8, left.clone()),
                _ => continue,
            };
            self.group_types.insert(index, name);
        }
    }

    /// A group type's index, numbering a new one in the first free slot.
    fn group_index(&mut self, name: &str) -> Option<u8> {
        if let Some((index, _)) = self.group_types.iter().find(|(_, known)| *known == name) {
            return Some(*index);
        }
        let free = (0..5u8).find(|index| !self.group_types.contains_key(index))?;
        self.group_types.insert(free, name.to_owned());
        Some(free)
    }
}

fn describe(flag: &Value) -> String {
    flag.get("key")
        .and_then(|k| k.as_str())
        .map_or_else(|| "(without a key)".to_owned(), |k| format!("{k:?}"))
}

/// A document of flags: `{"flags": [...], ...}` or a bare array.
fn read_document(text: &str) -> Result<Definitions, String> {
    let value: Value = sonic_rs::from_str(text).map_err(|err| format!("not valid JSON ({err})"))?;
    if let Some(flags) = value.as_array() {
        return Ok(Definitions {
            flags: flags.iter().cloned().collect(),
            ..Definitions::default()
        });
    }
    if !value.is_object() {
        return Err("expected a JSON array of flags or an object with \"flags\"".into());
    }
    sonic_rs::from_str(text).map_err(|err| format!("unreadable document ({err})"))
}
