//! Experience continuity, as PostHog keeps it (`posthog_featureflaghashkeyoverride`): when a
//! `/flags` request names the anonymous id a user browsed with before identifying
//! (`$anon_distinct_id`), each flag with `ensure_experience_continuity` remembers that id as the
//! hash key of the persons involved, so the user keeps the variant they saw for good, not only
//! for that one request (posthog-js sends the anonymous id once). A merge moves the hash keys of
//! the person merged away to the survivor, whose own win.

use std::collections::HashMap;

use heed::types::Bytes;
use heed::{Database, PutFlags, RoTxn, RwTxn};

use super::PersonDbs;
use crate::core::error::Result;
use crate::core::groups::{name_key, push_name};

/// person id(8) ‖ flag key (its SHA-256 past LMDB's key size) → flag key's length(4) ‖ flag key ‖
/// hash key
pub type OverrideDb = Database<Bytes, Bytes>;

fn override_key(person: u64, flag_key: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + flag_key.len().min(1 + 32));
    key.extend_from_slice(&person.to_be_bytes());
    push_name(&mut key, flag_key);
    key
}

fn override_value(flag_key: &str, hash_key: &str) -> Vec<u8> {
    let mut value = Vec::with_capacity(4 + flag_key.len() + hash_key.len());
    value.extend_from_slice(&u32::try_from(flag_key.len()).unwrap_or(u32::MAX).to_be_bytes());
    value.extend_from_slice(flag_key.as_bytes());
    value.extend_from_slice(hash_key.as_bytes());
    value
}

/// `(flag key, hash key)` of a stored value; `None` for one this layout did not write.
fn read_value(value: &[u8]) -> Option<(String, String)> {
    let (length, rest) = value.split_first_chunk::<4>()?;
    let (flag_key, hash_key) = rest.split_at_checked(u32::from_be_bytes(*length) as usize)?;
    Some((
        String::from_utf8_lossy(flag_key).into_owned(),
        String::from_utf8_lossy(hash_key).into_owned(),
    ))
}

/// `(flag key, hash key)` of every override a person has.
fn of_person(db: OverrideDb, txn: &RoTxn, person: u64) -> Result<Vec<(String, String)>> {
    let mut found = Vec::new();
    for entry in db.prefix_iter(txn, &person.to_be_bytes())? {
        let (_, value) = entry?;
        found.extend(read_value(value));
    }
    Ok(found)
}

fn put_unless_present(db: OverrideDb, txn: &mut RwTxn, person: u64, flag_key: &str, hash_key: &str) -> Result<()> {
    let key = override_key(person, flag_key);
    match db.put_with_flags(txn, PutFlags::NO_OVERWRITE, &key, &override_value(flag_key, hash_key)) {
        Ok(()) | Err(heed::Error::Mdb(heed::MdbError::KeyExist)) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Move the overrides of a person merged away to the one it merged into; the survivor's own
/// stay (PostHog's `ON CONFLICT DO NOTHING`).
pub(super) fn move_overrides(db: OverrideDb, txn: &mut RwTxn, from: u64, into: u64) -> Result<()> {
    for (flag_key, hash_key) in of_person(db, txn, from)? {
        put_unless_present(db, txn, into, &flag_key, &hash_key)?;
        db.delete(txn, &override_key(from, &flag_key))?;
    }
    Ok(())
}

/// Who a `/flags` request is for: the ids whose persons' hash keys count, the request's first.
pub struct ContinuityRequest<'a> {
    pub project: u32,
    pub distinct_id: &'a str,
    /// `$anon_distinct_id`: the hash key to remember for the persons of both ids.
    pub anon_distinct_id: Option<&'a str>,
    /// Every active flag with experience continuity.
    pub flag_keys: &'a [&'a str],
}

impl ContinuityRequest<'_> {
    fn ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.distinct_id).chain(self.anon_distinct_id)
    }
}

impl PersonDbs {
    /// The persons of the request's ids, the first id's first, each once.
    fn continuity_persons(&self, txn: &RoTxn, request: &ContinuityRequest<'_>) -> Result<Vec<u64>> {
        let mut persons = Vec::with_capacity(2);
        for id in request.ids() {
            if let Some(person) = self.distinct_ids.get(txn, &name_key(request.project, None, id))? {
                if !persons.contains(&person) {
                    persons.push(person);
                }
            }
        }
        Ok(persons)
    }

    /// The flags that need the anonymous id written as a hash key: those none of the persons
    /// has an override for yet (PostHog's `should_write_hash_key_override`); none without an
    /// anonymous id or a person to write for.
    pub fn overrides_to_write<'r>(&self, txn: &RoTxn, request: &ContinuityRequest<'r>) -> Result<Vec<&'r str>> {
        if request.anon_distinct_id.is_none() {
            return Ok(Vec::new());
        }
        let persons = self.continuity_persons(txn, request)?;
        if persons.is_empty() {
            return Ok(Vec::new());
        }
        let mut existing = Vec::new();
        for person in &persons {
            existing.extend(
                of_person(self.overrides, txn, *person)?
                    .into_iter()
                    .map(|(flag, _)| flag),
            );
        }
        Ok(request
            .flag_keys
            .iter()
            .copied()
            .filter(|flag| !existing.iter().any(|known| known == flag))
            .collect())
    }

    /// Write the anonymous id as the hash key of `flags` for every person of the request.
    pub fn write_overrides(&self, txn: &mut RwTxn, request: &ContinuityRequest<'_>, flags: &[&str]) -> Result<()> {
        let Some(hash_key) = request.anon_distinct_id else {
            return Ok(());
        };
        for person in self.continuity_persons(txn, request)? {
            for flag in flags {
                put_unless_present(self.overrides, txn, person, flag, hash_key)?;
            }
        }
        Ok(())
    }

    /// `{flag key: hash key}` over the request's persons; the first id's person wins a flag both have.
    pub fn overrides(&self, txn: &RoTxn, request: &ContinuityRequest<'_>) -> Result<HashMap<String, String>> {
        let mut found = HashMap::new();
        for person in self.continuity_persons(txn, request)?.into_iter().rev() {
            found.extend(of_person(self.overrides, txn, person)?);
        }
        Ok(found)
    }
}
