//! What the flag endpoints and the person debug route read from the store outside any commit:
//! a person, groups' properties, experience continuity's hash keys, and the group type slots.

use std::collections::HashMap;

use super::Store;
use crate::core::cookieless::CookielessEvent;
use crate::core::error::Result;
use crate::core::groups::GroupTypeConflict;
use crate::core::person::Person;
use crate::core::persons::ContinuityRequest;
use crate::core::rawjson::RawObject;

impl Store {
    /// The stored properties of the groups `{type: key}` names, as `{type: properties}` JSON; a
    /// group never identified reads as `{}`.
    pub fn group_properties(&self, token: &str, groups: &[(String, String)]) -> Result<String> {
        let txn = self.env.read_txn()?;
        let project = self.projects.get(&txn, token)?;
        let mut object = RawObject::default();
        for (group_type, group_key) in groups {
            let group = match project {
                Some(project) => self
                    .persons
                    .groups
                    .lookup(&txn, &self.group_types, project, group_type, group_key)?,
                None => None,
            };
            let properties = group.map_or_else(|| "{}".to_owned(), |group| group.properties_json());
            object.entries.push((group_type.as_str().into(), properties.into()));
        }
        Ok(object.to_json())
    }

    /// The stored group types that `POSTHOG_GROUP_TYPE_<n>` contradicts, each with the token
    /// of its project.
    pub fn group_type_conflicts(&self) -> Result<Vec<(String, GroupTypeConflict)>> {
        let txn = self.env.read_txn()?;
        let conflicts = self.persons.groups.conflicts(&txn, &self.group_types)?;
        if conflicts.is_empty() {
            return Ok(Vec::new());
        }
        let mut tokens = HashMap::new();
        for entry in self.projects.iter(&txn)? {
            let (token, project) = entry?;
            tokens.insert(project, token.to_owned());
        }
        Ok(conflicts
            .into_iter()
            .map(|conflict| (tokens.get(&conflict.project).cloned().unwrap_or_default(), conflict))
            .collect())
    }

    /// The distinct id a cookieless visitor's events get now (see `cookieless_state`); `None`
    /// while no salt of the day exists.
    pub fn stored_cookieless_id(&self, token: &str, visitor: &CookielessEvent) -> Result<Option<String>> {
        self.cookieless.stored_visitor_id(&self.env, token, visitor)
    }

    /// `stored_cookieless_id`, making the day's salt when it does not exist; may wait for the
    /// write lock.
    pub fn cookieless_id(&self, token: &str, visitor: &CookielessEvent) -> Result<String> {
        self.cookieless.visitor_id(&self.env, token, visitor)
    }

    /// The person a distinct id belongs to in the project of `token` (in any project when no
    /// token is given), as last committed.
    pub fn person(&self, token: Option<&str>, distinct_id: &str) -> Result<Option<Person>> {
        let txn = self.env.read_txn()?;
        let projects: Vec<u32> = match token {
            Some(token) => self.projects.get(&txn, token)?.into_iter().collect(),
            None => self
                .projects
                .iter(&txn)?
                .map(|entry| entry.map(|(_, id)| id))
                .collect::<heed::Result<_>>()?,
        };
        for project in projects {
            if let Some(person) = self.persons.lookup(&txn, project, distinct_id)? {
                return Ok(Some(person));
            }
        }
        Ok(None)
    }

    /// Experience continuity for the persons of a `/flags` request: the hash keys they hold
    /// (`{flag key: hash key}`), and whether its anonymous id is still to be remembered for
    /// some of `flag_keys`. Until it is, that id buckets those flags just as the stored hash key
    /// will (it is the one written), so the answer need not wait for the write.
    pub fn hash_key_overrides(&self, ids: &ContinuityIds<'_>, flag_keys: &[&str]) -> Result<Continuity> {
        let txn = self.env.read_txn()?;
        let Some(project) = self.projects.get(&txn, ids.token)? else {
            return Ok(Continuity::default());
        };
        let request = ids.request(project, flag_keys);
        Ok(Continuity {
            remember: !self.persons.overrides_to_write(&txn, &request)?.is_empty(),
            overrides: self.persons.overrides(&txn, &request)?,
        })
    }

    /// Remember the request's anonymous id as the hash key of the `flag_keys` none of its persons
    /// has one for (PostHog's `set_feature_flag_hash_key_overrides`); waits for the write lock.
    pub fn remember_hash_keys(&self, ids: &ContinuityIds<'_>, flag_keys: &[&str]) -> Result<()> {
        let mut txn = self.env.write_txn()?;
        let Some(project) = self.projects.get(&txn, ids.token)? else {
            return Ok(());
        };
        let request = ids.request(project, flag_keys);
        // Decided again under the lock: another request may have remembered them meanwhile.
        let missing = self.persons.overrides_to_write(&txn, &request)?;
        if missing.is_empty() {
            return Ok(());
        }
        self.persons.write_overrides(&mut txn, &request, &missing)?;
        self.commit_synced(txn)
    }
}

/// Who a `/flags` request asks continuity's hash keys for.
#[derive(Debug, Clone, Copy)]
pub struct ContinuityIds<'a> {
    pub token: &'a str,
    pub distinct_id: &'a str,
    /// `$anon_distinct_id`; an empty one, or one longer than PostHog's hash key column holds,
    /// is not remembered.
    pub anon_distinct_id: Option<&'a str>,
}

/// PostHog keeps a hash key in a `varchar(400)`.
const MAX_HASH_KEY_CHARS: usize = 400;

impl<'a> ContinuityIds<'a> {
    fn request(self, project: u32, flag_keys: &'a [&'a str]) -> ContinuityRequest<'a> {
        let anon = self
            .anon_distinct_id
            .filter(|anon| !anon.is_empty() && anon.chars().count() <= MAX_HASH_KEY_CHARS);
        ContinuityRequest {
            project,
            distinct_id: self.distinct_id,
            anon_distinct_id: anon,
            flag_keys,
        }
    }
}

/// What `Store::hash_key_overrides` found.
#[derive(Debug, Default)]
pub struct Continuity {
    pub overrides: HashMap<String, String>,
    pub remember: bool,
}
