//! `Person` against a plain model of PostHog's property rules: a list of (key, value, once) kept
//! in insertion order and searched from the start, the way persons were first kept. Random
//! updates, merges and store round trips must leave both with the same JSON, byte for byte.

use uuid::Uuid;

use super::person::{Person, PersonChange, PropertyUpdate};
use super::person_record::{PersonHeader, PersonRef};
use super::rawjson;

const KEYS: [&str; 12] = [
    "a",
    "plan",
    "$browser",
    "$current_url",
    "$os",
    "$initial_os",
    "q\"uote",
    "back\\slash",
    "line\nbreak",
    "é",
    "$set",
    "",
];
const VALUES: [&str; 8] = [
    "1",
    r#""x""#,
    "null",
    r#"{"k": [1, 2]}"#,
    r#""é\n""#,
    "true",
    "2.50",
    r#""""#,
];
const EVENTS: [&str; 5] = ["e", "$set", "$identify", "$exception", "$pageview"];

type Pairs = Vec<(&'static str, &'static str)>;
/// `$set`, `$set_once` and `$unset` as decoded keys and raw values.
type Update = (Pairs, Pairs, Vec<&'static str>);

struct Random(u64);

impl Random {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pairs(&mut self) -> Pairs {
        (0..self.below(6))
            .map(|_| (KEYS[self.below(KEYS.len())], VALUES[self.below(VALUES.len())]))
            .collect()
    }

    fn update(&mut self) -> Update {
        let unset = (0..self.below(3).saturating_sub(1))
            .map(|_| KEYS[self.below(KEYS.len())])
            .collect();
        (self.pairs(), self.pairs(), unset)
    }
}

/// The rules as first written: linear searches over a list.
#[derive(Clone, Default)]
struct Model {
    properties: Vec<(String, String, bool)>,
    version: u64,
}

impl Model {
    fn get(&self, key: &str) -> Option<&(String, String, bool)> {
        self.properties.iter().find(|(k, _, _)| k == key)
    }

    fn put(&mut self, key: &str, value: &str, once: bool) {
        match self.properties.iter_mut().find(|(k, _, _)| k == key) {
            Some(property) => (property.1, property.2) = (value.to_owned(), once),
            None => self.properties.push((key.to_owned(), value.to_owned(), once)),
        }
    }

    /// A new person has nothing for the event's `$unset` to remove.
    fn new(set: &[(&str, &str)], set_once: &[(&str, &str)]) -> Self {
        let mut model = Self::default();
        for (key, value) in set_once {
            model.put(key, value, true);
        }
        for (key, value) in set {
            model.put(key, value, false);
        }
        model
    }

    fn apply(&mut self, event: &str, set: &[(&str, &str)], set_once: &[(&str, &str)], unset: &[&str]) -> bool {
        const FILTERED: [&str; 3] = ["$current_url", "$browser", "$os"];
        if event == "$exception" {
            return false;
        }
        let force = ["$identify", "$set"].contains(&event);
        let mut once: Vec<(&str, &str)> = Vec::new();
        let mut promote = false;
        for (key, value) in set_once {
            let overridden = set.iter().any(|(set_key, _)| set_key == key);
            if !overridden && self.get(key).is_none() && !once.iter().any(|(k, _)| k == key) {
                promote |= !FILTERED.contains(key);
                once.push((key, value));
            }
        }
        let mut sets: Vec<(&str, &str)> = Vec::new();
        for (key, value) in set {
            match self.get(key) {
                Some((_, existing, false)) if existing == value => {}
                existing => {
                    promote |= existing.is_none() || !FILTERED.contains(key);
                    sets.push((key, value));
                }
            }
        }
        let unset: Vec<&str> = unset.iter().copied().filter(|key| self.get(key).is_some()).collect();
        promote |= !unset.is_empty();
        if (once.is_empty() && sets.is_empty() && unset.is_empty()) || !(promote || force) {
            return false;
        }
        for (key, value) in once {
            self.put(key, value, true);
        }
        for (key, value) in sets {
            self.put(key, value, false);
        }
        self.properties.retain(|(key, _, _)| !unset.contains(&key.as_str()));
        self.version += 1;
        true
    }

    fn absorb(&mut self, other: &Model) {
        for (key, value, once) in &other.properties {
            if self.get(key).is_none() {
                self.properties.push((key.clone(), value.clone(), *once));
            }
        }
        self.version = self.version.max(other.version) + 1;
    }

    fn json(&self, once: Option<bool>) -> String {
        rawjson::object_of(
            self.properties
                .iter()
                .filter(|(_, _, o)| once.is_none_or(|once| *o == once))
                .map(|(k, v, _)| (k.as_str(), v.as_str())),
        )
    }
}

fn agree(person: &Person, model: &Model) {
    assert_eq!(person.properties_json(), model.json(None));
    assert_eq!(person.set_json(), model.json(Some(false)));
    assert_eq!(person.set_once_json(), model.json(Some(true)));
    assert_eq!(person.version, model.version);
    for (key, value, once) in &model.properties {
        assert_eq!(person.get(key), Some((value.as_str(), *once)));
    }
    let mut stored = Vec::new();
    person.encode(&mut stored);
    assert_eq!(&Person::decode(&stored).unwrap(), person);
    let borrowed = PersonRef::parse(&stored).unwrap();
    assert!(borrowed.is_in_key_order());
    assert_eq!(borrowed.properties_json(None), model.json(None));
    assert_eq!(borrowed.properties_json(Some(true)), model.json(Some(true)));
    assert_eq!(borrowed.properties_json(Some(false)), model.json(Some(false)));
    assert_eq!(PersonHeader::read(&stored).unwrap(), person.header());
}

#[test]
fn updates_and_merges_agree_with_the_model() {
    for seed in 1..300u64 {
        let mut random = Random(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut people: Vec<(Person, Model)> = Vec::new();
        for step in 0..40 {
            let (set, set_once, unset) = random.update();
            let update = PropertyUpdate::of(&set, &set_once, &unset);
            match random.below(8) {
                0 => {
                    let person = Person::new(step, Uuid::nil(), 0, "d", &update);
                    people.push((person, Model::new(&set, &set_once)));
                }
                1 if people.len() > 1 => {
                    let (gone, gone_model) = people.swap_remove(random.below(people.len()));
                    let at = random.below(people.len());
                    people[at].0.absorb(&gone);
                    people[at].1.absorb(&gone_model);
                }
                _ if !people.is_empty() => {
                    let at = random.below(people.len());
                    let event = EVENTS[random.below(EVENTS.len())];
                    let (person, model) = &mut people[at];
                    let before = model.clone();
                    let applied = person.apply(event, &update);
                    assert_eq!(
                        applied.written(),
                        model.apply(event, &set, &set_once, &unset),
                        "seed {seed} step {step}"
                    );
                    // Not written, the event's row shows the person with its `$set` on top (the
                    // values that differ, as an update writes them).
                    let mut shown = before.clone();
                    for (key, value) in &set {
                        if !matches!(before.get(key), Some((_, existing, false)) if existing == value) {
                            shown.put(key, value, false);
                        }
                    }
                    match applied {
                        PersonChange::Shown(top) => {
                            // The export splices them in with the stored person's entry table.
                            let expected = Some(shown.json(None));
                            let mut encoded = Vec::new();
                            person.encode(&mut encoded);
                            let stored = PersonRef::parse(&encoded).unwrap();
                            assert_eq!(stored.json_with(&top), expected, "seed {seed} step {step}");
                        }
                        PersonChange::Unchanged if event != "$exception" => {
                            assert_eq!(person.properties_json(), shown.json(None), "seed {seed} step {step}");
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
            for (person, model) in &people {
                agree(person, model);
            }
        }
    }
}

#[test]
fn a_damaged_person_is_refused_rather_than_misread() {
    let update = PropertyUpdate::of(&[("plan", r#""pro""#), ("é", "1")], &[("ref", r#""ad""#)], &[]);
    let mut stored = Vec::new();
    Person::new(7, Uuid::nil(), 5, "anon", &update).encode(&mut stored);
    assert!(PersonRef::parse(&stored).is_ok());
    for cut in [0, 20, stored.len() - 1] {
        assert!(PersonRef::parse(&stored[..cut]).is_err(), "cut at {cut}");
    }
    // Lengths in the entry table that point past the text, or into a character.
    let mut longer = stored.clone();
    let last = longer.len() - 1;
    longer[last] = 0x7f;
    assert!(PersonRef::parse(&longer).is_err());
    let mut extra = stored.clone();
    extra.push(0);
    assert!(PersonRef::parse(&extra).is_err());
    // A byte of the stored text that is not UTF-8 any more: the first byte of "é".
    let mut garbled = stored.clone();
    let at = garbled.windows(2).position(|pair| pair == "é".as_bytes()).unwrap();
    garbled[at] = 0xff;
    assert!(PersonRef::parse(&garbled).is_err());
    assert!(Person::decode(&garbled).is_err());
}
