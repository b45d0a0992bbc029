//! Persons as PostHog keeps them: properties from `$set`/`$set_once`/`$unset`, the write filter
//! for fast-changing keys, and which events force an update. Identity (who is whom) is in
//! `identity`; this module is one person's state.

use uuid::Uuid;

use super::error::Result;
use super::person_event::READ_ONLY_PERSON_EVENTS;
use super::person_properties::{Change, PersonProperties};
use super::person_record::{self, PersonHeader, PersonRef};
pub use super::person_update::PropertyUpdate;

/// `$set` entries (keys as stored, escaped) as the JSON object a row shows over its person;
/// `None` when there are none.
fn shown_object<'a>(entries: impl Iterator<Item = (&'a str, &'a str)>) -> Option<String> {
    let mut shown = String::new();
    for (key, value) in entries {
        shown.push(if shown.is_empty() { '{' } else { ',' });
        shown.push('"');
        shown.push_str(key);
        shown.push_str("\":");
        shown.push_str(value);
    }
    (!shown.is_empty()).then(|| shown + "}")
}

/// Events whose updates are written even when only fast-changing keys changed.
const FORCED_UPDATE_EVENTS: [&str; 4] = ["$identify", "$create_alias", "$merge_dangerously", "$set"];

/// Keys that change too often to be worth a person write on their own; they ride along when
/// something else changes (PostHog's `FILTERED_PERSON_UPDATE_PROPERTIES`).
fn filtered(key: &str) -> bool {
    matches!(
        key,
        "$current_url"
            | "$pathname"
            | "$referring_domain"
            | "$referrer"
            | "$screen_height"
            | "$screen_width"
            | "$viewport_height"
            | "$viewport_width"
            | "$browser"
            | "$browser_version"
            | "$device_type"
            | "$raw_user_agent"
            | "$os"
            | "$os_name"
            | "$os_version"
            | "$geoip_postal_code"
            | "$geoip_time_zone"
            | "$geoip_latitude"
            | "$geoip_longitude"
            | "$geoip_accuracy_radius"
            | "$geoip_subdivision_1_code"
            | "$geoip_subdivision_1_name"
            | "$geoip_subdivision_2_code"
            | "$geoip_subdivision_2_name"
            | "$geoip_subdivision_3_code"
            | "$geoip_subdivision_3_name"
            | "$geoip_city_confidence"
            | "$geoip_country_confidence"
            | "$geoip_postal_code_confidence"
            | "$geoip_subdivision_1_confidence"
            | "$geoip_subdivision_2_confidence"
    )
}

/// What an event's update did to its person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersonChange {
    /// Nothing changed: the event's row shows the person as stored.
    Unchanged,
    /// The person changed, and must be written with its version bumped.
    Written,
    /// Only fast-changing keys changed, which are not written on their own: the person stays
    /// as it is, and the event's row shows it with these of the event's `$set` values on top (a
    /// JSON object), as PostHog's rows do.
    Shown(String),
    /// `Written`, and the event's row shows the person with these of its `$set` values on top:
    /// keys the event also unset, gone from the person, as PostHog's row lays the whole `$set`
    /// over the person it wrote.
    WrittenShowing(String),
}

impl PersonChange {
    pub fn written(&self) -> bool {
        matches!(self, Self::Written | Self::WrittenShowing(_))
    }
}

/// A person as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Monotonic integer id, unique across projects.
    pub id: u64,
    pub uuid: Uuid,
    /// Microseconds since the epoch.
    pub created_at: i64,
    /// Bumped every time the person changes.
    pub version: u64,
    pub is_identified: bool,
    pub properties: PersonProperties,
    pub distinct_ids: Vec<String>,
}

impl Person {
    /// A person whose properties are `update` applied to none (`Persons::create` hands it the
    /// update PostHog creates a person with: `$set_once`, `$set` and `$creator_event_uuid`).
    pub fn new(id: u64, uuid: Uuid, created_at: i64, distinct_id: &str, update: &PropertyUpdate) -> Self {
        let order = update.order();
        let once = update.once_writes();
        let changes: Vec<Change<'_>> = (0..update.writes())
            .map(|index| {
                let (key, value) = update.write(index);
                Change {
                    key,
                    value,
                    once: index < once,
                    at: None,
                }
            })
            .collect();
        // PostHog creates a person from the event's `$set_once` and `$set` alone: there is
        // nothing yet for its `$unset` to remove.
        let mut properties = PersonProperties::default();
        properties.update(&changes, &order.sorted, &[]);
        Self {
            id,
            uuid,
            created_at,
            version: 0,
            is_identified: false,
            properties,
            distinct_ids: vec![distinct_id.to_owned()],
        }
    }

    /// A property's raw JSON value, and whether `$set_once` wrote it.
    pub fn get(&self, key: &str) -> Option<(&str, bool)> {
        self.properties.get(key)
    }

    /// How an event's update is applied: `None` when the event never updates its person,
    /// else whether it writes the person even when only fast-changing keys changed.
    pub fn update_forced(event: &str) -> Option<bool> {
        (!READ_ONLY_PERSON_EVENTS.contains(&event)).then(|| FORCED_UPDATE_EVENTS.contains(&event))
    }

    /// Apply an event's update with PostHog's rules; says whether the person changed (and so
    /// must be written, with its version bumped).
    ///
    /// `$set_once` fills absent keys, `$set` overwrites values that differ (and wins over a
    /// `$set_once` of the same key), `$unset` removes the keys present before the event. An
    /// update that only touches fast-changing keys of an existing person is not written unless
    /// the event forces it; its `$set` is still shown on the event's row.
    pub fn apply(&mut self, event: &str, update: &PropertyUpdate) -> PersonChange {
        let Some(force) = Self::update_forced(event) else {
            return PersonChange::Unchanged;
        };
        let properties = &self.properties;
        let order = update.order();
        let once = update.once_writes();
        let writes: Vec<(&str, &str)> = (0..update.writes()).map(|index| update.write(index)).collect();
        let mut found = vec![None; writes.len()];
        properties.join(
            order
                .sorted
                .iter()
                .map(|&index| (index as usize, writes[index as usize].0)),
            &mut found,
        );
        // `$set_once` entries first, then `$set`'s, in the order they are written.
        let mut changes: Vec<Change<'_>> = Vec::with_capacity(writes.len());
        let mut change_of = vec![u32::MAX; writes.len()];
        let mut promote = false;
        for (index, (&(key, value), at)) in writes.iter().zip(&found).enumerate() {
            let written = if index < once {
                order.fills[index] && at.is_none()
            } else {
                at.is_none_or(|at| properties.at(at) != (value, false))
            };
            if written {
                // A new key `$set` is always worth writing, filtered or not.
                promote = promote || (index >= once && at.is_none()) || !filtered(key);
                change_of[index] = changes.len() as u32;
                changes.push(Change {
                    key,
                    value,
                    once: index < once,
                    at: *at,
                });
            }
        }
        // `$unset` removes the keys the person had before the event, as PostHog decides it
        // against the person it read: a key the same event sets anew lands, and one it
        // overwrites goes.
        let unset: Vec<u32> = update.unset().filter_map(|key| properties.find(key)).collect();
        promote |= !unset.is_empty();
        if changes.is_empty() && unset.is_empty() {
            return PersonChange::Unchanged;
        }
        if !(promote || force) {
            // Of the changes, `$set`'s are what PostHog lays over the person on the event's row
            // (all of them keys the person has: a new one is always written).
            let shown = change_of[once..]
                .iter()
                .filter(|&&change| change != u32::MAX)
                .map(|&change| (changes[change as usize].key, changes[change as usize].value));
            return shown_object(shown).map_or(PersonChange::Unchanged, PersonChange::Shown);
        }
        let new_keys: Vec<u32> = order
            .sorted
            .iter()
            .map(|&index| change_of[index as usize])
            .filter(|&change| change != u32::MAX && changes[change as usize].at.is_none())
            .collect();
        let unset_but_shown = if unset.is_empty() {
            None
        } else {
            let unset_keys: Vec<&str> = unset.iter().map(|&at| properties.key(at)).collect();
            shown_object(
                writes[once..]
                    .iter()
                    .filter(|(key, _)| unset_keys.contains(key))
                    .copied(),
            )
        };
        self.properties.update(&changes, &new_keys, &unset);
        self.version += 1;
        match unset_but_shown {
            Some(shown) => PersonChange::WrittenShowing(shown),
            None => PersonChange::Written,
        }
    }

    /// Fold another person into this one: this one's properties win, the older `created_at`
    /// stays, every distinct id moves over.
    pub fn absorb(&mut self, other: &Person) {
        let theirs = &other.properties;
        let mut found = vec![None; theirs.len()];
        let sorted = theirs.sorted().iter().map(|&at| at as usize);
        self.properties
            .join(sorted.clone().map(|at| (at, theirs.key(at as u32))), &mut found);
        let mut change_of = vec![u32::MAX; theirs.len()];
        let mut changes: Vec<Change<'_>> = Vec::new();
        for (at, (key, value, once)) in theirs.iter().enumerate() {
            if found[at].is_none() {
                change_of[at] = changes.len() as u32;
                changes.push(Change {
                    key,
                    value,
                    once,
                    at: None,
                });
            }
        }
        let new_keys: Vec<u32> = sorted
            .map(|at| change_of[at])
            .filter(|&change| change != u32::MAX)
            .collect();
        self.properties.update(&changes, &new_keys, &[]);
        self.created_at = self.created_at.min(other.created_at);
        for id in &other.distinct_ids {
            if !self.distinct_ids.contains(id) {
                self.distinct_ids.push(id.clone());
            }
        }
        self.is_identified = true;
        // Higher than either's, as PostHog counts it: a reader ordering snapshots by version
        // sees the merged person after everything either person was.
        self.version = self.version.max(other.version) + 1;
    }

    /// All properties, as PostHog shows a person: a JSON object.
    pub fn properties_json(&self) -> String {
        self.properties.json().to_owned()
    }

    /// Hogflare's split: the properties `$set` wrote.
    pub fn set_json(&self) -> String {
        self.properties.split_json(false)
    }

    /// Hogflare's split: the properties `$set_once` wrote.
    pub fn set_once_json(&self) -> String {
        self.properties.split_json(true)
    }

    pub fn header(&self) -> PersonHeader {
        PersonHeader {
            id: self.id,
            uuid: self.uuid,
            created_at: self.created_at,
            version: self.version,
            is_identified: self.is_identified,
        }
    }

    /// Append the stored layout (`person_record`) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        person_record::encode(&self.header(), &self.distinct_ids, &self.properties, out);
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let stored = PersonRef::parse(bytes)?;
        Ok(Self {
            id: stored.id,
            uuid: stored.uuid,
            created_at: stored.created_at,
            version: stored.version,
            is_identified: stored.is_identified,
            properties: stored.properties(),
            distinct_ids: stored.distinct_ids.iter().map(|id| (*id).to_owned()).collect(),
        })
    }
}

#[cfg(test)]
#[path = "person_tests.rs"]
mod tests;
