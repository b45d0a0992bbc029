//! Groups as PostHog keeps them: group types numbered 0–4 per project on first sight (or fixed
//! by configuration), groups created and updated only by `$groupidentify`, and the `$group_<i>`
//! properties, group columns and `group_properties` every event naming groups gets.

use std::collections::HashMap;

use heed::types::{Bytes, U8};
use heed::{Database, Env, RwTxn};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::Result;
use super::javascript;
use super::person_event::{PersonEvent, PersonMode};
use super::rawjson;

/// PostHog's `MAX_GROUP_TYPES_PER_TEAM`.
pub const MAX_GROUP_TYPES: usize = 5;

/// LMDB's longest key (`mdb_env_get_maxkeysize` of the library as built).
const MAX_KEY_BYTES: usize = 511;
/// Starts the hashed form of a name: no UTF-8 text has this byte, so it never starts a name.
const HASHED_NAME: u8 = 0xFF;

/// The key of a name (a distinct id, a group type, a group key) in a project's table:
/// `project ‖ slot ‖ name`. PostHog bounds those names in characters, and 200 characters of four
/// bytes each are more than an LMDB key holds, so a name that would make the key too long is
/// stored as `0xFF ‖ SHA-256(name)` instead; refusing the key would fail the whole commit.
pub(super) fn name_key(project: u32, slot: Option<u8>, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(5 + name.len().min(1 + 32));
    key.extend_from_slice(&project.to_be_bytes());
    key.extend(slot);
    push_name(&mut key, name);
    key
}

/// End a key with `name`, or with its hashed form when the key would be too long for LMDB.
pub(super) fn push_name(key: &mut Vec<u8>, name: &str) {
    if key.len() + name.len() <= MAX_KEY_BYTES {
        key.extend_from_slice(name.as_bytes());
    } else {
        key.push(HASHED_NAME);
        key.extend_from_slice(&Sha256::digest(name.as_bytes()));
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub created_at: i64,
    pub version: u64,
    /// Key, raw JSON value.
    pub properties: Vec<(String, String)>,
}

impl Group {
    pub fn properties_json(&self) -> String {
        rawjson::object_of(self.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

/// The event's properties with PostHog's `$group_<index>` keys set for the groups it names
/// (`None` when there are none). They say which groups the event went with, so a key the client
/// sent itself is replaced, as PostHog does. A `$groupidentify` also gets the slot of the type
/// it identifies as `$group_type_index`: two types can share a key (organization 1, project 1),
/// and then the columns alone do not tell which slot is the identified group's.
pub fn property_entries(
    properties: &str,
    groups: &[Option<String>; MAX_GROUP_TYPES],
    identified: Option<u8>,
) -> Option<String> {
    const NAMES: [&str; MAX_GROUP_TYPES] = ["$group_0", "$group_1", "$group_2", "$group_3", "$group_4"];
    let additions: Vec<(&str, String)> = groups
        .iter()
        .zip(NAMES)
        .filter_map(|(key, name)| Some((name, rawjson::string_literal(key.as_deref()?))))
        .chain(identified.map(|index| ("$group_type_index", index.to_string())))
        .collect();
    if additions.is_empty() {
        return None;
    }
    // Usually no such key is there (nor could be, without this text), and the additions are
    // spliced onto the SDK's text.
    if !properties.contains("$group_") && !properties.contains('\\') {
        return Some(rawjson::append_entries(properties, &additions));
    }
    let mut object = rawjson::RawObject::parse(properties).ok()?;
    for (name, raw) in additions {
        object.entries.retain(|(key, _)| key != name);
        object.entries.push((name.into(), raw.into()));
    }
    Some(object.to_json())
}

#[derive(Clone, Copy)]
pub struct GroupDbs {
    /// project(4) ‖ group type index(1) ‖ group key → `Group`
    groups: Database<Bytes, Bytes>,
    /// project(4) ‖ group type → index
    group_types: Database<Bytes, U8>,
}

impl GroupDbs {
    pub fn create(env: &Env, txn: &mut RwTxn) -> Result<Self> {
        Ok(Self {
            groups: env.create_database(txn, Some("groups"))?,
            group_types: env.create_database(txn, Some("group_types"))?,
        })
    }
}

/// The slot `POSTHOG_GROUP_TYPE_<n>` gives `group_type`, if any.
fn configured_slot(fixed: &[Option<String>; MAX_GROUP_TYPES], group_type: &str) -> Option<u8> {
    let slot = fixed.iter().position(|fixed| fixed.as_deref() == Some(group_type))?;
    Some(slot as u8)
}

impl GroupDbs {
    /// A group as last committed, read outside any commit; a type with a configured slot is
    /// read from that slot (stores written before such slots were recorded do not name it).
    pub fn lookup(
        &self,
        txn: &heed::RoTxn,
        fixed: &[Option<String>; MAX_GROUP_TYPES],
        project: u32,
        group_type: &str,
        group_key: &str,
    ) -> Result<Option<Group>> {
        let index = match configured_slot(fixed, group_type) {
            Some(slot) => Some(slot),
            None => self.group_types.get(txn, &name_key(project, None, group_type))?,
        };
        let Some(index) = index else {
            return Ok(None);
        };
        let key = name_key(project, Some(index), group_key);
        Ok(self.groups.get(txn, &key)?.map(postcard::from_bytes).transpose()?)
    }
}

/// A group type whose stored slot the configured slots (`POSTHOG_GROUP_TYPE_<n>`) contradict:
/// its slot is configured for another type, or it is configured for another slot.
#[derive(Debug, PartialEq, Eq)]
pub struct GroupTypeConflict {
    pub project: u32,
    /// The stored type's name (a name too long to keep in a key is not known).
    pub group_type: Option<String>,
    pub slot: u8,
}

impl GroupDbs {
    /// Every stored group type the configured slots contradict: events of both types would be
    /// written to one slot and their groups merged.
    pub fn conflicts(
        &self,
        txn: &heed::RoTxn,
        fixed: &[Option<String>; MAX_GROUP_TYPES],
    ) -> Result<Vec<GroupTypeConflict>> {
        let mut out = Vec::new();
        for entry in self.group_types.iter(txn)? {
            let (key, slot) = entry?;
            let Some((project, name)) = key.split_first_chunk::<4>() else {
                continue;
            };
            let project = u32::from_be_bytes(*project);
            let is = |configured: &str| name_key(project, None, configured) == key;
            let slot_configured_for_another = fixed
                .get(usize::from(slot))
                .and_then(Option::as_deref)
                .is_some_and(|configured| !is(configured));
            let configured_elsewhere = fixed
                .iter()
                .enumerate()
                .any(|(other, configured)| other != usize::from(slot) && configured.as_deref().is_some_and(is));
            if slot_configured_for_another || configured_elsewhere {
                let group_type = (name.first() != Some(&HASHED_NAME))
                    .then(|| String::from_utf8(name.to_vec()).ok())
                    .flatten();
                out.push(GroupTypeConflict {
                    project,
                    group_type,
                    slot,
                });
            }
        }
        Ok(out)
    }
}

/// The group work of one commit.
pub struct GroupWork<'a> {
    groups_db: Database<Bytes, Bytes>,
    group_types_db: Database<Bytes, U8>,
    fixed: &'a [Option<String>; MAX_GROUP_TYPES],
    groups: HashMap<Vec<u8>, Group>,
    types: HashMap<(u32, String), Option<u8>>,
    /// Group types refused because the project already has five.
    pub refused_types: u32,
}

impl<'a> GroupWork<'a> {
    pub fn begin(dbs: GroupDbs, fixed: &'a [Option<String>; MAX_GROUP_TYPES]) -> Self {
        Self {
            groups_db: dbs.groups,
            group_types_db: dbs.group_types,
            fixed,
            groups: HashMap::new(),
            types: HashMap::new(),
            refused_types: 0,
        }
    }

    /// The slot of a group type, given one when it has none and `assign` says so.
    fn type_index(&mut self, txn: &mut RwTxn, project: u32, group_type: &str, assign: bool) -> Result<Option<u8>> {
        let cache_key = (project, group_type.to_owned());
        if let Some(index) = self.types.get(&cache_key) {
            return Ok(*index);
        }
        let key = name_key(project, None, group_type);
        if let Some(slot) = configured_slot(self.fixed, group_type) {
            // Recorded like any other, so that a later configuration giving the slot to another
            // type can be refused (`conflicts`) rather than merge the two types' groups; by an
            // event that may claim a type, and only then remembered as recorded.
            if assign {
                if self.group_types_db.get(txn, &key)?.is_none() {
                    self.group_types_db.put(txn, &key, &slot)?;
                }
                self.types.insert(cache_key, Some(slot));
            }
            return Ok(Some(slot));
        }
        let mut index = self.group_types_db.get(txn, &key)?;
        if index.is_none() && !assign {
            return Ok(None);
        }
        if index.is_none() {
            let mut used = [false; MAX_GROUP_TYPES];
            for (slot, fixed) in self.fixed.iter().enumerate() {
                used[slot] = fixed.is_some();
            }
            for entry in self.group_types_db.prefix_iter(txn, &project.to_be_bytes())? {
                let (_, taken) = entry?;
                if let Some(slot) = used.get_mut(usize::from(taken)) {
                    *slot = true;
                }
            }
            index = used.iter().position(|taken| !taken).map(|slot| slot as u8);
            match index {
                Some(free) => self.group_types_db.put(txn, &key, &free)?,
                None => self.refused_types += 1,
            }
        }
        self.types.insert(cache_key, index);
        Ok(index)
    }

    fn load_group(&mut self, txn: &RwTxn, key: &[u8]) -> Result<Option<&mut Group>> {
        if !self.groups.contains_key(key) {
            let Some(bytes) = self.groups_db.get(txn, key)? else {
                return Ok(None);
            };
            self.groups.insert(key.to_vec(), postcard::from_bytes(bytes)?);
        }
        Ok(self.groups.get_mut(key))
    }

    /// Apply an event's group operations.
    pub fn apply(&mut self, txn: &mut RwTxn, project: u32, fields: &PersonEvent) -> Result<AppliedGroups> {
        let mut applied = AppliedGroups::default();
        if fields.groups.is_empty() {
            return Ok(applied);
        }
        // An event that only reads persons (an exception) maps its groups to the types the
        // project has, as PostHog's read-only group step does, and adds none.
        let assign = fields.mode != PersonMode::Existing;
        let mut properties = rawjson::RawObject::default();
        for (group_type, group_key) in &fields.groups {
            let Some(index) = self.type_index(txn, project, group_type, assign)? else {
                continue;
            };
            let Some(group_key) = group_key else {
                continue;
            };
            let key = name_key(project, Some(index), group_key);
            let identify = fields
                .group_identify
                .as_ref()
                .filter(|group| group.group_type == *group_type && group.group_key == *group_key);
            if let Some(identify) = identify {
                applied.identified = Some(index);
                self.load_group(txn, &key)?;
                let group = self.groups.entry(key.clone()).or_default();
                // A group seen for the first time is stored, whatever its `$group_set`.
                let mut changed = group.version == 0;
                for (name, value) in &identify.set {
                    // PostHog's `calculateUpdate` writes a value unless it deeply equals the one
                    // held: `"2"` replaces `2`, an equal object (in any key order) changes nothing.
                    match group.properties.iter_mut().find(|(existing, _)| existing == name) {
                        Some(entry) if javascript::deeply_equal(value, &entry.1) => {}
                        Some(entry) => {
                            entry.1.clone_from(value);
                            changed = true;
                        }
                        None => {
                            group.properties.push((name.clone(), value.clone()));
                            changed = true;
                        }
                    }
                }
                if changed {
                    group.version += 1;
                    let bytes = postcard::to_stdvec(&*group)?;
                    self.groups_db.put(txn, &key, &bytes)?;
                }
            }
            let stored = self
                .load_group(txn, &key)?
                .map_or_else(|| "{}".to_owned(), |group| group.properties_json());
            applied.columns[usize::from(index)] = Some(group_key.clone());
            properties.entries.push((group_type.clone().into(), stored.into()));
        }
        applied.properties = (!properties.is_empty()).then(|| properties.to_json());
        Ok(applied)
    }
}

/// What an event's groups are once applied.
#[derive(Debug, Default)]
pub struct AppliedGroups {
    /// The group key in each type's slot.
    pub columns: [Option<String>; MAX_GROUP_TYPES],
    /// `{group type: properties}` for the groups the event names.
    pub properties: Option<String>,
    /// The slot of the group a `$groupidentify` identified.
    pub identified: Option<u8>,
}
