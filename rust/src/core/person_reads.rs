//! Persons as one commit reads them: each loaded and decoded once, kept beside its stored
//! layout, and marked when it changes so that the commit writes it once at its end.

use heed::RwTxn;
use uuid::Uuid;

use super::PersonWork;
use crate::core::error::{CoreError, Result};
use crate::core::groups::name_key;
use crate::core::person::{Person, PersonChange, PropertyUpdate};
use crate::core::person_record::PersonHeader;

/// A person a commit has read or made.
pub(super) struct Loaded {
    pub(super) person: Person,
    /// To be written when the commit ends.
    pub(super) dirty: bool,
    /// `person` in the stored layout, while `fresh`: made at most once per change, for the
    /// snapshot rows and the final write alike.
    encoded: Vec<u8>,
    fresh: bool,
    /// The outbox position of this commit's entry that holds `encoded` as it is now: later
    /// snapshots of the person, unchanged, point to it rather than hold it again.
    pub(super) held_at: Option<u64>,
    /// An update that left `person` as it is, and whether its event forced it, when `Some`:
    /// the same one again, as the events of one client's batch often carry, leaves it so too,
    /// unchecked. `unchanged_by` keeps its buffers while forgotten, to be overwritten.
    unchanged: Option<bool>,
    unchanged_by: PropertyUpdate,
    /// What that update's event showed of the person (`PersonChange::Shown`), the same again.
    unchanged_shows: Option<String>,
}

impl Loaded {
    pub(super) fn new(person: Person) -> Self {
        Self {
            person,
            dirty: false,
            encoded: Vec::new(),
            fresh: false,
            held_at: None,
            unchanged: None,
            unchanged_by: PropertyUpdate::default(),
            unchanged_shows: None,
        }
    }

    /// `Person::apply`, skipped for an update that already left the person as it is.
    pub(super) fn apply(&mut self, event: &str, update: &PropertyUpdate) -> PersonChange {
        let Some(forced) = Person::update_forced(event) else {
            return PersonChange::Unchanged;
        };
        if self.unchanged == Some(forced) && self.unchanged_by == *update {
            return self
                .unchanged_shows
                .clone()
                .map_or(PersonChange::Unchanged, PersonChange::Shown);
        }
        let applied = self.person.apply(event, update);
        if applied.written() {
            return applied;
        }
        self.unchanged = Some(forced);
        self.unchanged_by.clone_from(update);
        self.unchanged_shows = match &applied {
            PersonChange::Shown(json) => Some(json.clone()),
            _ => None,
        };
        applied
    }

    pub(super) fn encoded(&mut self) -> &[u8] {
        if !self.fresh {
            self.encoded.clear();
            self.person.encode(&mut self.encoded);
            self.fresh = true;
        }
        &self.encoded
    }
}

impl PersonWork<'_> {
    /// The uuid and `created_at` of the person a distinct id belongs to, read in place when
    /// the commit has not loaded it: all a personless event's row needs.
    pub(super) fn peek(&mut self, txn: &RwTxn, project: u32, distinct_id: &str) -> Result<Option<(Uuid, i64)>> {
        let Some(id) = self.person_id(txn, project, distinct_id)? else {
            return Ok(None);
        };
        if let Some(loaded) = self.persons.get(&id) {
            return Ok(Some((loaded.person.uuid, loaded.person.created_at)));
        }
        let Some(bytes) = self.dbs.persons.get(txn, &id)? else {
            return Ok(None);
        };
        let header = PersonHeader::read(bytes)?;
        Ok(Some((header.uuid, header.created_at)))
    }

    /// Whether a personless event used `distinct_id` while it had no person.
    pub(super) fn was_personless(&self, txn: &RwTxn, project: u32, distinct_id: &str) -> Result<bool> {
        Ok(self
            .dbs
            .personless
            .get(txn, &name_key(project, None, distinct_id))?
            .is_some())
    }

    /// The id of the person a distinct id belongs to, as stored.
    fn person_id(&self, txn: &RwTxn, project: u32, distinct_id: &str) -> Result<Option<u64>> {
        Ok(self.dbs.distinct_ids.get(txn, &name_key(project, None, distinct_id))?)
    }

    pub(super) fn resolve(&mut self, txn: &RwTxn, project: u32, distinct_id: &str) -> Result<Option<u64>> {
        let Some(id) = self.person_id(txn, project, distinct_id)? else {
            return Ok(None);
        };
        if !self.persons.contains_key(&id) {
            let Some(bytes) = self.dbs.persons.get(txn, &id)? else {
                return Ok(None);
            };
            self.persons.insert(id, Loaded::new(Person::decode(bytes)?));
        }
        Ok(Some(id))
    }

    pub(super) fn loaded(&mut self, id: u64) -> Result<&mut Loaded> {
        self.persons
            .get_mut(&id)
            .ok_or_else(|| CoreError::Store(format!("person {id} is not loaded")))
    }

    /// The person, marked to be written when the commit ends.
    pub(super) fn touch(&mut self, id: u64) -> Result<&mut Person> {
        let loaded = self
            .persons
            .get_mut(&id)
            .ok_or_else(|| CoreError::Store(format!("person {id} is not loaded")))?;
        if !loaded.dirty {
            loaded.dirty = true;
            self.dirty.push(id);
        }
        loaded.fresh = false;
        loaded.held_at = None;
        loaded.unchanged = None;
        Ok(&mut loaded.person)
    }
}
