//! The person store through the whole core: request bodies decoded, committed, and the outbox
//! read back, as the server does it.
#![allow(clippy::needless_pass_by_value)] // `json!` values read best handed over whole

use chrono::Utc;
use uuid::Uuid;

use super::cookieless::CookielessMode;
use super::decode::{self, DecodedRequest, DecoderConfig, HeaderFacts};
use super::error::Result;
use super::person::Person;
use super::persons::{person_uuid, PersonWarning};
use super::request::{RequestParts, RouteKind};
use super::row::{EventRow, PersonSnapshot};
use super::store::{CommitOptions, Store, StoreConfig};

pub(super) const TOKEN: &str = "phc_persons";

pub(super) struct Harness {
    _dir: tempfile::TempDir,
    pub(super) store: Store,
    read: u64,
    /// How the decoder treats cookieless events.
    pub(super) cookieless: CookielessMode,
}

impl Harness {
    pub(super) fn new() -> Self {
        Self::with_group_types(Default::default())
    }

    fn with_group_types(group_types: [Option<String>; 5]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            map_size: 64 << 20,
            max_readers: 16,
            group_types,
            compress_outbox: true,
            ..StoreConfig::default()
        };
        let store = Store::open(dir.path(), &config).unwrap();
        // Every entry is read back through the outbox's compression.
        store
            .install_dictionary(crate::core::store::dictionary_tests::pageview_dictionary(), None)
            .unwrap();
        Self {
            _dir: dir,
            store,
            read: 0,
            cookieless: CookielessMode::default(),
        }
    }

    /// Commit one `/batch` body; returns the rows it added to the outbox and the warnings.
    pub(super) fn send(
        &mut self,
        batch: serde_json::Value,
    ) -> (Vec<EventRow>, Vec<PersonSnapshot>, Vec<PersonWarning>) {
        self.send_to(RouteKind::Event, batch)
    }

    pub(super) fn send_to(
        &mut self,
        route: RouteKind,
        batch: serde_json::Value,
    ) -> (Vec<EventRow>, Vec<PersonSnapshot>, Vec<PersonWarning>) {
        let decoded = self.decode(route, &batch).unwrap();
        let options = CommitOptions {
            dedupe_window_days: 7,
            max_outbox_bytes: u64::MAX,
            now: Utc::now(),
        };
        let outcome = self.store.commit(vec![decoded], options).unwrap();
        let chunk = self.store.read_outbox(self.read, usize::MAX, u64::MAX).unwrap();
        self.read = chunk.last_seq;
        let (mut events, mut persons) = (Vec::new(), Vec::new());
        for (_, record) in chunk.records {
            let (event, person) = record.rows();
            persons.extend(person);
            events.extend(event);
        }
        (events, persons, outcome[0].warnings.keys().copied().collect())
    }

    /// One `batch` decoded as the server would, with the harness's cookieless mode.
    pub(super) fn decode(&self, route: RouteKind, batch: &serde_json::Value) -> Result<DecodedRequest> {
        let body = serde_json::json!({"api_key": TOKEN, "batch": batch}).to_string();
        let parts = RequestParts::posted(route, body.as_bytes());
        let config = DecoderConfig {
            cookieless: self.cookieless,
            ..DecoderConfig::default()
        };
        decode::decode(&parts, HeaderFacts::default(), &config, Utc::now())
    }

    pub(super) fn person(&self, distinct_id: &str) -> Option<Person> {
        self.store.person(Some(TOKEN), distinct_id).unwrap()
    }
}

/// A person's properties as JSON text without the `$creator_event_uuid` every new person gets
/// (the uuid of an event the decoder named), keys in their order.
pub(super) fn without_creator(json: &str) -> String {
    let Some(at) = json.find(r#""$creator_event_uuid":""#) else {
        return json.to_owned();
    };
    let end = at + r#""$creator_event_uuid":""#.len() + 37;
    let (before, after) = (&json[..at], &json[end..]);
    match (before.strip_suffix(','), after.strip_prefix(',')) {
        (Some(before), _) => format!("{before}{after}"),
        (None, Some(after)) => format!("{before}{after}"),
        (None, None) => format!("{before}{after}"),
    }
}

pub(super) fn capture(distinct_id: &str, properties: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"event": "e", "distinct_id": distinct_id, "properties": properties})
}

pub(super) fn identify(distinct_id: &str, anon: &str) -> serde_json::Value {
    serde_json::json!({"event": "$identify", "distinct_id": distinct_id, "properties": {"$anon_distinct_id": anon}})
}

#[test]
fn identify_links_an_anonymous_person_to_the_user() {
    let mut h = Harness::new();
    h.send(serde_json::json!([capture(
        "anon",
        serde_json::json!({"$set": {"a": 1}})
    )]));
    let (events, snapshots, _) = h.send(serde_json::json!([identify("user", "anon")]));
    let person = h.person("user").unwrap();
    assert_eq!(h.person("anon").unwrap().id, person.id);
    assert_eq!(person.distinct_ids, vec!["anon", "user"]);
    assert!(person.is_identified);
    assert_eq!(person.uuid, person_uuid(TOKEN, "anon"));
    assert_eq!(events[0].person_id.as_deref(), Some(person.uuid.to_string().as_str()));
    assert_eq!(snapshots[0].operation, "identify");
}

#[test]
fn identify_with_neither_person_creates_one_with_both_ids() {
    let mut h = Harness::new();
    h.send(serde_json::json!([identify("user", "anon")]));
    let person = h.person("anon").unwrap();
    assert_eq!((person.distinct_ids.len(), person.is_identified), (2, true));
    assert_eq!(h.person("user").unwrap().id, person.id);
}

#[test]
fn merging_two_persons_keeps_the_identified_one_and_its_values() {
    let mut h = Harness::new();
    h.send(serde_json::json!([
        capture("anon", serde_json::json!({"$set": {"plan": "free", "ref": "ad"}})),
        capture("user", serde_json::json!({"$set": {"plan": "pro"}})),
    ]));
    let older = h.person("anon").unwrap().created_at;
    let (_, snapshots, _) = h.send(serde_json::json!([identify("user", "anon")]));
    let person = h.person("anon").unwrap();
    assert_eq!(person.uuid, person_uuid(TOKEN, "user"));
    assert_eq!(
        without_creator(&person.properties_json()),
        r#"{"plan":"pro","ref":"ad"}"#
    );
    assert_eq!(person.created_at, older);
    let operations: Vec<&str> = snapshots.iter().map(|s| s.operation.as_str()).collect();
    assert_eq!(operations, ["merged", "identify"]);
}

#[test]
fn an_identified_person_is_merged_only_dangerously() {
    let mut h = Harness::new();
    h.send(serde_json::json!([identify("a", "a-anon"), identify("b", "b-anon")]));
    let (_, _, warnings) = h.send(serde_json::json!([identify("b", "a")]));
    assert_eq!(warnings, [PersonWarning::CannotMergeAlreadyIdentified]);
    assert_ne!(h.person("a").unwrap().id, h.person("b").unwrap().id);
    assert!(h.person("b").unwrap().is_identified);
    let merge = serde_json::json!({"event": "$merge_dangerously", "distinct_id": "b", "properties": {"alias": "a"}});
    let (_, _, warnings) = h.send(serde_json::json!([merge]));
    assert!(warnings.is_empty());
    assert_eq!(h.person("a").unwrap().id, h.person("b").unwrap().id);
    assert_eq!(h.person("a-anon").unwrap().distinct_ids.len(), 4);
}

#[test]
fn illegal_ids_are_never_merged() {
    let mut h = Harness::new();
    let (events, _, warnings) = h.send(serde_json::json!([identify("user", "undefined")]));
    assert_eq!(warnings, [PersonWarning::CannotMergeWithIllegalDistinctId]);
    assert!(h.person("undefined").is_none());
    assert!(events[0].person_id.is_some());
}

#[test]
fn personless_events_read_but_never_write() {
    let mut h = Harness::new();
    let personless = capture(
        "ghost",
        serde_json::json!({"$process_person_profile": false, "$set": {"a": 1}}),
    );
    let (events, snapshots, _) = h.send(serde_json::json!([personless]));
    assert!(snapshots.is_empty());
    assert!(h.person("ghost").is_none());
    assert_eq!(events[0].person_id, Some(person_uuid(TOKEN, "ghost").to_string()));
    assert_eq!(events[0].person_properties.as_deref(), Some("{}"));
    assert_eq!(events[0].person_created_at, Some(5_000_000));
}

#[test]
fn groups_take_slots_and_events_read_them() {
    let mut h = Harness::with_group_types([None, Some("org".into()), None, None, None]);
    let group = serde_json::json!({"event": "$groupidentify", "distinct_id": "u", "properties":
        {"$group_type": "company", "$group_key": "acme", "$group_set": {"name": "Acme"}}});
    let (events, snapshots, _) = h.send(serde_json::json!([group]));
    // As on PostHog, the group identify goes with its distinct id's person, made for it here,
    // whose properties the group's do not touch.
    assert!(events[0].person_id.is_some());
    assert_eq!(snapshots.len(), 1);
    let person: serde_json::Value = serde_json::from_str(&h.person("u").unwrap().properties_json()).unwrap();
    assert_eq!(
        person.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["$creator_event_uuid"]
    );
    assert_eq!(events[0].groups[0].as_deref(), Some("acme"));
    let (events, _, _) = h.send(serde_json::json!([capture(
        "u",
        serde_json::json!({"$groups": {"company": "acme", "org": "o1", "team": "t"}})
    )]));
    let row = &events[0];
    assert_eq!(
        row.groups,
        [Some("acme".into()), Some("o1".into()), Some("t".into()), None, None]
    );
    assert_eq!(
        row.group_properties.as_deref(),
        Some(r#"{"company":{"name":"Acme"},"org":{},"team":{}}"#)
    );
    assert!(row.properties.as_deref().unwrap().contains(r#""$group_1":"o1""#));
    // A personless event's groups stay in its properties, unmapped, as on PostHog.
    let personless = serde_json::json!({"$groups": {"company": "acme"}, "$process_person_profile": false});
    let (events, _, _) = h.send(serde_json::json!([capture("u", personless)]));
    assert_eq!(events[0].groups, [None, None, None, None, None]);
    assert!(events[0].group_properties.is_none());
    assert!(!events[0].properties.as_deref().unwrap().contains("$group_0"));
    // company, org and team hold three of the five slots: x and y take the last two.
    let many = serde_json::json!({"$groups": {"x": "1", "y": "2", "z": "3"}});
    let (_, _, warnings) = h.send(serde_json::json!([capture("u", many)]));
    assert_eq!(warnings, [PersonWarning::TooManyGroupTypes]);
}

#[test]
fn a_new_person_records_the_event_that_created_it_and_has_nothing_to_unset() {
    let mut h = Harness::new();
    let (first, second) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
    let creating = serde_json::json!({"event": "e", "distinct_id": "d", "uuid": first, "properties": {
        "$set": {"plan": "pro", "$creator_event_uuid": "mine"}, "$unset": ["plan"]}});
    let (events, snapshots, _) = h.send(serde_json::json!([creating]));
    // PostHog's new person: the event's `$set_once` and `$set`, then the event's uuid.
    // Once, with the event's uuid rather than the `$set` value.
    let created = format!(r#"{{"$creator_event_uuid":"{first}","plan":"pro"}}"#);
    assert_eq!(events[0].person_properties.as_deref(), Some(created.as_str()));
    assert_eq!(
        snapshots[0].person.properties_json(),
        h.person("d").unwrap().properties_json()
    );
    // Once the person exists, `$unset` removes and `$set` may overwrite the key like any other.
    let later =
        serde_json::json!({"event": "e", "distinct_id": "d", "uuid": second, "properties": {"$unset": ["plan"]}});
    h.send(serde_json::json!([later]));
    let stored: serde_json::Value = serde_json::from_str(&h.person("d").unwrap().properties_json()).unwrap();
    assert_eq!(stored, serde_json::json!({"$creator_event_uuid": first}));
    // A person an `$identify` creates for two unseen ids records the `$identify`.
    let identify_uuid = Uuid::now_v7().to_string();
    let mut event = identify("user", "anon");
    event["uuid"] = identify_uuid.clone().into();
    h.send(serde_json::json!([event]));
    let merged: serde_json::Value = serde_json::from_str(&h.person("anon").unwrap().properties_json()).unwrap();
    assert_eq!(merged["$creator_event_uuid"], identify_uuid.as_str());
    // A merge of two persons keeps the one merged into, and the event that created it.
    let (made_anon, made_user) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
    h.send(serde_json::json!([
        {"event": "e", "distinct_id": "later-anon", "uuid": made_anon, "properties": {}},
        {"event": "e", "distinct_id": "later-user", "uuid": made_user, "properties": {}},
    ]));
    h.send(serde_json::json!([identify("later-user", "later-anon")]));
    let survivor: serde_json::Value = serde_json::from_str(&h.person("later-anon").unwrap().properties_json()).unwrap();
    assert_eq!(survivor, serde_json::json!({"$creator_event_uuid": made_user}));
}

#[test]
fn a_group_type_named_without_a_key_takes_its_slot() {
    // posthog-python's `groups={"company": user.company_id}` for a user without a company:
    // PostHog's group step gives `company` a slot whatever its key, so the slots that follow
    // are numbered as a PostHog project numbers them.
    let mut h = Harness::new();
    let (events, _, _) = h.send(serde_json::json!([
        capture("u", serde_json::json!({"$groups": {"company": null}})),
        capture("u", serde_json::json!({"$groups": {"project": "p1"}})),
        capture(
            "u",
            serde_json::json!({"$groups": {"team": "", "company": "c1", "project": "p1"}})
        ),
    ]));
    let columns: Vec<_> = events.iter().map(|row| row.groups.clone()).collect();
    assert_eq!(
        columns,
        [
            [None, None, None, None, None],
            [None, Some("p1".into()), None, None, None],
            [Some("c1".into()), Some("p1".into()), None, None, None],
        ]
    );
    assert_eq!(
        events[2].group_properties.as_deref(),
        Some(r#"{"company":{},"project":{}}"#)
    );
    // `team` took the third slot: two more fill the five, and a sixth is refused.
    let more = serde_json::json!({"$groups": {"a": "1", "b": "2", "c": "3"}});
    let (events, _, warnings) = h.send(serde_json::json!([capture("u", more)]));
    assert_eq!(warnings, [PersonWarning::TooManyGroupTypes]);
    assert_eq!(events[0].groups, [None, None, None, Some("1".into()), Some("2".into())]);
}

#[test]
fn an_exception_maps_its_groups_to_the_types_the_project_has_and_claims_none() {
    let mut h = Harness::with_group_types([None, Some("org".into()), None, None, None]);
    let exception = |groups: serde_json::Value| serde_json::json!({"event": "$exception", "distinct_id": "u", "properties": {"$groups": groups}});
    let (events, _, _) = h.send(serde_json::json!([
        exception(serde_json::json!({"org": "o1", "team": "t1"})),
        capture("u", serde_json::json!({"$groups": {"company": "acme"}})),
        exception(serde_json::json!({"company": "acme", "team": "t1"})),
        capture("u", serde_json::json!({"$groups": {"team": "t1"}})),
    ]));
    let columns: Vec<_> = events.iter().map(|row| row.groups.clone()).collect();
    assert_eq!(
        columns,
        [
            [None, Some("o1".into()), None, None, None],
            [Some("acme".into()), None, None, None, None],
            [Some("acme".into()), None, None, None, None],
            [None, None, Some("t1".into()), None, None],
        ]
    );
}
