//! The person store, inside the store's write transaction: which person a distinct id is,
//! identify/alias/merge with PostHog's four cases and refusals, and property updates. Persons
//! touched by a commit stay decoded in memory and are written once, when it ends.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use heed::byteorder::BigEndian;
use heed::types::{Bytes, Unit, U64};
use heed::{Database, Env, RwTxn};
use uuid::Uuid;

use super::error::{CoreError, Result};
use super::groups::{name_key, AppliedGroups, GroupDbs, GroupWork, MAX_GROUP_TYPES};
use super::person::{Person, PersonChange, PropertyUpdate};
use super::person_event::{PersonEvent, PersonMode};
use super::person_update::Writes;

#[path = "hash_key_overrides.rs"]
mod hash_key_overrides;
#[path = "person_merge.rs"]
mod merge;
#[path = "person_reads.rs"]
mod reads;

pub use hash_key_overrides::ContinuityRequest;
use reads::Loaded;

/// PostHog's namespace for person uuids derived from a distinct id (`person-uuid.ts`).
const PERSON_NAMESPACE: Uuid = Uuid::from_u128(0x932979b4_65c3_4424_8467_0b66ec27bc22);
/// `created_at` of the stand-in person of a personless event: 1970-01-01T00:00:05Z.
const PERSONLESS_CREATED_AT: i64 = 5_000_000;
const META_NEXT_PERSON: &[u8] = b"persons.next_id";
/// The property PostHog gives a new person: the uuid of the event that created it.
const CREATOR_EVENT_UUID: &str = "$creator_event_uuid";

/// The person uuid PostHog derives from a distinct id: every project finds the same one.
pub fn person_uuid(team_key: &str, distinct_id: &str) -> Uuid {
    Uuid::new_v5(&PERSON_NAMESPACE, format!("{team_key}:{distinct_id}").as_bytes())
}

/// Something a person or group update could not do as asked; the event still lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PersonWarning {
    CannotMergeWithIllegalDistinctId,
    CannotMergeAlreadyIdentified,
    TooManyGroupTypes,
}

impl PersonWarning {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CannotMergeWithIllegalDistinctId => "cannot_merge_with_illegal_distinct_id",
            Self::CannotMergeAlreadyIdentified => "cannot_merge_already_identified",
            Self::TooManyGroupTypes => "too_many_group_types",
        }
    }
}

/// The event a person update comes from.
#[derive(Debug, Clone, Copy)]
pub struct EventOfPerson<'a> {
    pub name: &'a str,
    pub distinct_id: &'a str,
    pub uuid: Uuid,
    /// The event's timestamp, in microseconds: a person it creates was created then.
    pub timestamp: i64,
}

/// The person an event row shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowPerson {
    pub uuid: Uuid,
    pub created_at: i64,
    /// `None` when the event resolved to a person: its properties are the snapshot's.
    pub properties: Option<String>,
}

/// What applying one event did, for its row and the person snapshots.
#[derive(Debug, Default)]
pub struct Applied {
    pub person: Option<RowPerson>,
    /// Internal id of the person the event resolved to (not for personless events).
    pub person_id: Option<u64>,
    /// A person removed by a merge, as it was last.
    pub merged_away: Option<Person>,
    pub groups: AppliedGroups,
    /// The event's `$set` values its row shows over its person's properties, not written to
    /// the person on their own (a JSON object; `PersonChange::Shown`).
    pub shown: Option<String>,
    /// The event was made personless here (`PersonMode::FullIfKnown` without a person): its row
    /// goes without its person updates and says it was personless, as PostHog rewrites it.
    pub made_personless: bool,
}

/// How a person snapshot's entry holds the person (`PersonWork::snapshot_person`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotPerson<'a> {
    Encoded(&'a [u8]),
    /// The outbox position of the entry that holds it.
    HeldAt(u64),
}

#[derive(Clone, Copy)]
pub struct PersonDbs {
    persons: Database<U64<BigEndian>, Bytes>,
    /// project(4) ‖ distinct id → person id
    distinct_ids: Database<Bytes, U64<BigEndian>>,
    pub groups: GroupDbs,
    meta: Database<Bytes, Bytes>,
    /// project(4) ‖ distinct id, for each id a personless event used while it had no person
    /// (PostHog's `posthog_personlessdistinctid`).
    personless: Database<Bytes, Unit>,
    overrides: hash_key_overrides::OverrideDb,
}

impl PersonDbs {
    pub fn create(env: &Env, txn: &mut RwTxn) -> Result<Self> {
        Ok(Self {
            persons: env.create_database(txn, Some("persons"))?,
            distinct_ids: env.create_database(txn, Some("distinct_ids"))?,
            groups: GroupDbs::create(env, txn)?,
            meta: env.create_database(txn, Some("persons_meta"))?,
            personless: env.create_database(txn, Some("personless_ids"))?,
            overrides: env.create_database(txn, Some("hash_key_overrides"))?,
        })
    }

    /// The person a distinct id belongs to, read outside any commit.
    pub fn lookup(&self, txn: &heed::RoTxn, project: u32, distinct_id: &str) -> Result<Option<Person>> {
        let Some(id) = self.distinct_ids.get(txn, &name_key(project, None, distinct_id))? else {
            return Ok(None);
        };
        self.persons.get(txn, &id)?.map(Person::decode).transpose()
    }
}

/// The person and group work of one commit.
pub struct PersonWork<'a> {
    dbs: PersonDbs,
    groups: GroupWork<'a>,
    persons: HashMap<u64, Loaded, ahash::RandomState>,
    /// Persons to write, in the order they were first changed.
    dirty: Vec<u64>,
    deleted: Vec<u64>,
    next_id: u64,
    warnings: BTreeMap<PersonWarning, u32>,
}

impl<'a> PersonWork<'a> {
    pub fn begin(
        dbs: PersonDbs,
        txn: &RwTxn,
        fixed_group_types: &'a [Option<String>; MAX_GROUP_TYPES],
    ) -> Result<Self> {
        let next_id = dbs
            .meta
            .get(txn, META_NEXT_PERSON)?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
            .map_or(1, u64::from_be_bytes);
        Ok(Self {
            dbs,
            groups: GroupWork::begin(dbs.groups, fixed_group_types),
            persons: HashMap::default(),
            dirty: Vec::new(),
            deleted: Vec::new(),
            next_id,
            warnings: BTreeMap::new(),
        })
    }

    /// Warnings so far, the groups' included; the count starts again.
    pub fn take_warnings(&mut self) -> BTreeMap<PersonWarning, u32> {
        self.take_group_warnings();
        std::mem::take(&mut self.warnings)
    }

    fn take_group_warnings(&mut self) {
        let refused = std::mem::take(&mut self.groups.refused_types);
        if refused > 0 {
            *self.warnings.entry(PersonWarning::TooManyGroupTypes).or_default() += refused;
        }
    }

    fn warn(&mut self, warning: PersonWarning) {
        *self.warnings.entry(warning).or_default() += 1;
    }

    /// The person `id` for the snapshot in the outbox entry at position `at`: the person in the
    /// stored layout, or, when an earlier entry of this commit holds it as it is now, that
    /// entry's position.
    pub fn snapshot_person(&mut self, id: u64, at: u64) -> Option<SnapshotPerson<'_>> {
        let loaded = self.persons.get_mut(&id)?;
        if let Some(held_at) = loaded.held_at {
            return Some(SnapshotPerson::HeldAt(held_at));
        }
        loaded.held_at = Some(at);
        Some(SnapshotPerson::Encoded(loaded.encoded()))
    }

    fn link(&mut self, txn: &mut RwTxn, project: u32, distinct_id: &str, id: u64) -> Result<()> {
        self.dbs
            .distinct_ids
            .put(txn, &name_key(project, None, distinct_id), &id)?;
        Ok(())
    }

    /// A new person with `distinct_ids`, its uuid derived from `uuid_of` (one of them), made by
    /// `event`. As on PostHog, a person starts with the event's `$set_once` and `$set` (its
    /// `$unset` has nothing to remove yet) and the uuid of that event, `$creator_event_uuid`.
    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        txn: &mut RwTxn,
        project: u32,
        team_key: &str,
        uuid_of: &str,
        distinct_ids: &[&str],
        event: &EventOfPerson<'_>,
        update: &PropertyUpdate,
    ) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let mut creation = PropertyUpdate::default();
        creation.reserve(
            update.text_len() + 64,
            update.writes() - update.once_writes() + 1,
            update.once_writes(),
        );
        for (key, value) in update.set_once() {
            creation.push_read(Writes::SetOnce, &Cow::Borrowed(key), value);
        }
        for (key, value) in update.set() {
            creation.push_read(Writes::Set, &Cow::Borrowed(key), value);
        }
        let creator = format!("\"{}\"", event.uuid.hyphenated());
        creation.push_read(Writes::Set, &Cow::Borrowed(CREATOR_EVENT_UUID), &creator);
        let uuid = person_uuid(team_key, uuid_of);
        let mut person = Person::new(id, uuid, event.timestamp, distinct_ids[0], &creation);
        for distinct_id in distinct_ids {
            if !person.distinct_ids.iter().any(|known| known == distinct_id) {
                person.distinct_ids.push((*distinct_id).to_owned());
            }
            self.link(txn, project, distinct_id, id)?;
        }
        self.persons.insert(id, Loaded::new(person));
        self.touch(id)?;
        Ok(id)
    }

    /// Apply one event.
    pub fn apply(
        &mut self,
        txn: &mut RwTxn,
        project: u32,
        team_key: &str,
        event: &EventOfPerson<'_>,
        fields: &PersonEvent,
    ) -> Result<Applied> {
        let distinct_id = event.distinct_id;
        // As on PostHog, an event's `$groups` give it group columns only when it processes a
        // person: a personless event keeps them in its properties, unmapped.
        let groups = if fields.mode == PersonMode::Personless {
            AppliedGroups::default()
        } else {
            self.groups.apply(txn, project, fields)?
        };
        let mut applied = Applied {
            groups,
            ..Applied::default()
        };
        // A flag read's person, when it has one, is found here once for the full path below.
        let mut known = None;
        let mode = match fields.mode {
            PersonMode::FullIfKnown => {
                known = self.resolve(txn, project, distinct_id)?;
                applied.made_personless = known.is_none();
                if known.is_some() {
                    PersonMode::Full
                } else {
                    PersonMode::Personless
                }
            }
            mode => mode,
        };
        match mode {
            PersonMode::Without => {}
            PersonMode::Personless | PersonMode::Existing => {
                let existing = match mode {
                    PersonMode::Existing => self.resolve(txn, project, distinct_id)?,
                    _ => None,
                };
                if let Some(id) = existing {
                    self.attach(id, &mut applied)?;
                } else {
                    let row = if let Some((uuid, created_at)) = self.peek(txn, project, distinct_id)? {
                        RowPerson {
                            uuid,
                            created_at,
                            properties: Some("{}".into()),
                        }
                    } else {
                        if mode == PersonMode::Personless {
                            let key = name_key(project, None, distinct_id);
                            self.dbs.personless.get_or_put(txn, &key, &())?;
                        }
                        RowPerson {
                            uuid: person_uuid(team_key, distinct_id),
                            created_at: PERSONLESS_CREATED_AT,
                            properties: Some("{}".into()),
                        }
                    };
                    applied.person = Some(row);
                }
            }
            PersonMode::Full | PersonMode::FullIfKnown => {
                let id = match &fields.identity {
                    Some(op) if op.other != distinct_id => {
                        self.identify(txn, project, team_key, event, op, fields, &mut applied)?
                    }
                    _ => None,
                };
                let mut shown = None;
                let id = match id {
                    Some(id) => id,
                    // A flag read (never an identity operation) found its person above.
                    None => match known.map_or_else(|| self.resolve(txn, project, distinct_id), |id| Ok(Some(id)))? {
                        Some(id) => {
                            match self.loaded(id)?.apply(event.name, &fields.update) {
                                PersonChange::Written => drop(self.touch(id)?),
                                PersonChange::WrittenShowing(json) => {
                                    self.touch(id)?;
                                    shown = Some(json);
                                }
                                PersonChange::Shown(json) => shown = Some(json),
                                PersonChange::Unchanged => {}
                            }
                            id
                        }
                        None => self.create(
                            txn,
                            project,
                            team_key,
                            distinct_id,
                            &[distinct_id],
                            event,
                            &fields.update,
                        )?,
                    },
                };
                self.attach(id, &mut applied)?;
                applied.shown = shown;
            }
        }
        Ok(applied)
    }

    /// The event goes with the person `id`: its person columns, and the person's snapshot, are
    /// written from the person as the commit leaves it.
    fn attach(&mut self, id: u64, applied: &mut Applied) -> Result<()> {
        let person = &self.loaded(id)?.person;
        applied.person_id = Some(id);
        applied.person = Some(RowPerson {
            uuid: person.uuid,
            created_at: person.created_at,
            properties: None,
        });
        Ok(())
    }

    /// Write what the commit changed: every touched person once, the removed ones deleted.
    pub fn finish(mut self, txn: &mut RwTxn) -> Result<BTreeMap<PersonWarning, u32>> {
        self.take_group_warnings();
        for id in &self.dirty {
            let loaded = self
                .persons
                .get_mut(id)
                .ok_or_else(|| CoreError::Store(format!("person {id} is not loaded")))?;
            self.dbs.persons.put(txn, id, loaded.encoded())?;
        }
        for id in &self.deleted {
            self.dbs.persons.delete(txn, id)?;
        }
        self.dbs.meta.put(txn, META_NEXT_PERSON, &self.next_id.to_be_bytes())?;
        Ok(self.warnings)
    }
}
