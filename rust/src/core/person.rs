//! Persons as PostHog keeps them: properties from `$set`/`$set_once`/`$unset`, the write filter
//! for fast-changing keys, and which events force an update. Identity (who is whom) is in
//! `identity`; this module is one person's state.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::rawjson;

/// Events that never change a person: nothing orders them against the person's other updates.
const NO_PERSON_UPDATE_EVENTS: [&str; 2] = ["$exception", "$$heatmap"];

/// Events whose updates are written even when only fast-changing keys changed.
const FORCED_UPDATE_EVENTS: [&str; 4] = ["$identify", "$create_alias", "$merge_dangerously", "$set"];

/// Keys that change too often to be worth a person write on their own; they ride along when
/// something else changes (PostHog's `FILTERED_PERSON_UPDATE_PROPERTIES`).
const FILTERED: [&str; 31] = [
    "$current_url",
    "$pathname",
    "$referring_domain",
    "$referrer",
    "$screen_height",
    "$screen_width",
    "$viewport_height",
    "$viewport_width",
    "$browser",
    "$browser_version",
    "$device_type",
    "$raw_user_agent",
    "$os",
    "$os_name",
    "$os_version",
    "$geoip_postal_code",
    "$geoip_time_zone",
    "$geoip_latitude",
    "$geoip_longitude",
    "$geoip_accuracy_radius",
    "$geoip_subdivision_1_code",
    "$geoip_subdivision_1_name",
    "$geoip_subdivision_2_code",
    "$geoip_subdivision_2_name",
    "$geoip_subdivision_3_code",
    "$geoip_subdivision_3_name",
    "$geoip_city_confidence",
    "$geoip_country_confidence",
    "$geoip_postal_code_confidence",
    "$geoip_subdivision_1_confidence",
    "$geoip_subdivision_2_confidence",
];

fn filtered(key: &str) -> bool {
    FILTERED.contains(&key)
}

/// What one event asks of its person's properties. Values are raw JSON text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertyUpdate {
    pub set: Vec<(String, String)>,
    pub set_once: Vec<(String, String)>,
    pub unset: Vec<String>,
}

impl PropertyUpdate {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.set_once.is_empty() && self.unset.is_empty()
    }
}

/// One property: raw JSON value, and whether `$set_once` (rather than `$set`) wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Property {
    pub key: String,
    pub value: String,
    pub once: bool,
}

/// A person as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// Monotonic integer id, unique across projects.
    pub id: u64,
    pub uuid: Uuid,
    /// Microseconds since the epoch.
    pub created_at: i64,
    /// Bumped every time the person changes.
    pub version: u64,
    pub is_identified: bool,
    pub properties: Vec<Property>,
    pub distinct_ids: Vec<String>,
}

impl Person {
    /// A new person, created by an event: `{...$set_once, ...$set}` as PostHog creates it.
    pub fn new(id: u64, uuid: Uuid, created_at: i64, distinct_id: &str, update: &PropertyUpdate) -> Self {
        let mut person = Self {
            id,
            uuid,
            created_at,
            version: 0,
            is_identified: false,
            properties: Vec::new(),
            distinct_ids: vec![distinct_id.to_owned()],
        };
        for (key, value) in &update.set_once {
            person.put(key, value, true);
        }
        for (key, value) in &update.set {
            person.put(key, value, false);
        }
        person
            .properties
            .retain(|property| !update.unset.contains(&property.key));
        person
    }

    pub fn get(&self, key: &str) -> Option<&Property> {
        self.properties.iter().find(|property| property.key == key)
    }

    fn put(&mut self, key: &str, value: &str, once: bool) {
        match self.properties.iter_mut().find(|property| property.key == key) {
            Some(property) => {
                value.clone_into(&mut property.value);
                property.once = once;
            }
            None => self.properties.push(Property {
                key: key.to_owned(),
                value: value.to_owned(),
                once,
            }),
        }
    }

    /// Apply an event's update with PostHog's rules; returns whether the person changed (and so
    /// must be written, with its version bumped).
    ///
    /// `$set_once` fills absent keys, `$set` overwrites values that differ (and wins over a
    /// `$set_once` of the same key), `$unset` removes present keys. An update that only touches
    /// fast-changing keys of an existing person is not written unless the event forces it.
    pub fn apply(&mut self, event: &str, update: &PropertyUpdate) -> bool {
        if NO_PERSON_UPDATE_EVENTS.contains(&event) {
            return false;
        }
        let force = FORCED_UPDATE_EVENTS.contains(&event);
        let mut set_once: Vec<(&str, &str)> = Vec::new();
        let mut promote = false;
        for (key, value) in &update.set_once {
            let overridden = update.set.iter().any(|(set_key, _)| set_key == key);
            if !overridden && self.get(key).is_none() && !set_once.iter().any(|(k, _)| k == key) {
                promote |= !filtered(key);
                set_once.push((key, value));
            }
        }
        let mut set: Vec<(&str, &str)> = Vec::new();
        for (key, value) in &update.set {
            match self.get(key) {
                Some(existing) if existing.value == *value && !existing.once => {}
                existing => {
                    // A new key is always worth writing, filtered or not.
                    promote |= existing.is_none() || !filtered(key);
                    set.push((key, value));
                }
            }
        }
        // `$unset` runs last, so it also removes what this very update set.
        let pending = |key: &str| set_once.iter().chain(set.iter()).any(|(k, _)| *k == key);
        let unset: Vec<&str> = update
            .unset
            .iter()
            .map(String::as_str)
            .filter(|key| self.get(key).is_some() || pending(key))
            .collect();
        promote |= !unset.is_empty();
        let has_changes = !set_once.is_empty() || !set.is_empty() || !unset.is_empty();
        if !has_changes || !(promote || force) {
            return false;
        }
        for (key, value) in set_once {
            self.put(key, value, true);
        }
        for (key, value) in set {
            self.put(key, value, false);
        }
        self.properties
            .retain(|property| !unset.contains(&property.key.as_str()));
        self.version += 1;
        true
    }

    /// Fold another person into this one: this one's properties win, the older `created_at`
    /// stays, every distinct id moves over.
    pub fn absorb(&mut self, other: Person) {
        for property in other.properties {
            if self.get(&property.key).is_none() {
                self.properties.push(property);
            }
        }
        self.created_at = self.created_at.min(other.created_at);
        for id in other.distinct_ids {
            if !self.distinct_ids.contains(&id) {
                self.distinct_ids.push(id);
            }
        }
        self.is_identified = true;
        self.version += 1;
    }

    fn object(&self, once: Option<bool>) -> String {
        rawjson::object_of(
            self.properties
                .iter()
                .filter(move |p| once.is_none_or(|once| p.once == once))
                .map(|p| (p.key.as_str(), p.value.as_str())),
        )
    }

    /// All properties, as PostHog shows a person: a JSON object.
    pub fn properties_json(&self) -> String {
        self.object(None)
    }

    /// Hogflare's split: the properties `$set` wrote.
    pub fn set_json(&self) -> String {
        self.object(Some(false))
    }

    /// Hogflare's split: the properties `$set_once` wrote.
    pub fn set_once_json(&self) -> String {
        self.object(Some(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(set: &[(&str, &str)], set_once: &[(&str, &str)], unset: &[&str]) -> PropertyUpdate {
        let pairs = |items: &[(&str, &str)]| items.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        PropertyUpdate {
            set: pairs(set),
            set_once: pairs(set_once),
            unset: unset.iter().map(|k| (*k).to_owned()).collect(),
        }
    }

    fn person(set: &[(&str, &str)]) -> Person {
        Person::new(1, Uuid::nil(), 0, "d", &update(set, &[], &[]))
    }

    #[test]
    fn set_once_fills_only_absent_keys_and_set_overwrites() {
        let mut p = person(&[("email", r#""a@x""#)]);
        assert!(p.apply(
            "e",
            &update(
                &[("plan", r#""pro""#)],
                &[("email", r#""b@x""#), ("source", r#""ad""#)],
                &[]
            )
        ));
        assert_eq!(p.properties_json(), r#"{"email":"a@x","source":"ad","plan":"pro"}"#);
        assert_eq!(p.set_once_json(), r#"{"source":"ad"}"#);
        assert_eq!(p.version, 1);
    }

    #[test]
    fn set_wins_over_set_once_of_the_same_key() {
        let mut p = person(&[]);
        p.apply("e", &update(&[("plan", r#""pro""#)], &[("plan", r#""free""#)], &[]));
        assert_eq!(p.properties_json(), r#"{"plan":"pro"}"#);
    }

    #[test]
    fn unchanged_values_are_no_change() {
        let mut p = person(&[("plan", r#""pro""#)]);
        assert!(!p.apply("e", &update(&[("plan", r#""pro""#)], &[], &["missing"])));
        assert_eq!(p.version, 0);
    }

    #[test]
    fn unset_runs_after_set_and_set_once() {
        let mut p = person(&[("seed", "1")]);
        p.apply("e", &update(&[("a", "1")], &[("b", "2")], &["a", "b"]));
        assert_eq!(p.properties_json(), r#"{"seed":1}"#);
    }

    #[test]
    fn unset_removes_present_keys() {
        let mut p = person(&[("a", "1"), ("b", "2")]);
        assert!(p.apply("e", &update(&[], &[], &["a"])));
        assert_eq!(p.properties_json(), r#"{"b":2}"#);
    }

    #[test]
    fn fast_changing_keys_alone_do_not_write() {
        let mut p = person(&[("$current_url", r#""/a""#), ("plan", r#""free""#)]);
        assert!(!p.apply("$pageview", &update(&[("$current_url", r#""/b""#)], &[], &[])));
        assert_eq!(p.get("$current_url").unwrap().value, r#""/a""#);
        // ... but ride along with a real change, and are written when the event forces it.
        assert!(p.apply(
            "$pageview",
            &update(&[("$current_url", r#""/b""#), ("plan", r#""pro""#)], &[], &[])
        ));
        assert_eq!(p.get("$current_url").unwrap().value, r#""/b""#);
        assert!(p.apply("$set", &update(&[("$current_url", r#""/c""#)], &[], &[])));
        // A new fast-changing key is written; one only offered through $set_once is not on its own.
        assert!(p.apply("e", &update(&[("$browser", r#""Chrome""#)], &[], &[])));
        assert!(!p.apply("e", &update(&[], &[("$os", r#""Linux""#)], &[])));
    }

    #[test]
    fn some_events_never_update() {
        let mut p = person(&[]);
        assert!(!p.apply("$exception", &update(&[("a", "1")], &[], &[])));
    }

    #[test]
    fn absorbing_keeps_this_persons_values_and_the_older_creation() {
        let mut keep = Person::new(2, Uuid::nil(), 200, "user", &update(&[("plan", r#""pro""#)], &[], &[]));
        let gone = Person::new(
            1,
            Uuid::nil(),
            100,
            "anon",
            &update(&[("plan", r#""free""#), ("ref", r#""ad""#)], &[], &[]),
        );
        keep.absorb(gone);
        assert_eq!(keep.properties_json(), r#"{"plan":"pro","ref":"ad"}"#);
        assert_eq!((keep.created_at, keep.is_identified), (100, true));
        assert_eq!(keep.distinct_ids, vec!["user", "anon"]);
    }
}
