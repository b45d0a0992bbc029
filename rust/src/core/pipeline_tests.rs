//! The Pipelines rows and bodies: Hogflare's shapes, the body limit, lanes, and what the store gives.

use super::*;
use crate::core::decode::DecodedRequest;
use crate::core::event::NormalizedEvent;
use crate::core::person::{Person, PropertyUpdate};
use crate::core::person_event::{PersonEvent, PersonMode};
use crate::core::row::{OutboxRecordRef, PersonSnapshotOf, SOURCE_POSTHOG};
use crate::core::store::{CommitOptions, StoreConfig};

fn event(properties: Option<&str>) -> EventRowRef<'_> {
    EventRowRef {
        uuid: Uuid::from_u128(1),
        team_id: None,
        source: SOURCE_POSTHOG,
        event: "$pageview",
        distinct_id: "user \"1\"",
        created_at: 1_700_000_000_123_456,
        timestamp: Some(1_700_000_000_000_000),
        properties,
        context: None,
        person_id: None,
        person_created_at: None,
        person_properties: None,
        groups: [None, Some("acme"), None, None, None],
        group_properties: None,
        api_key: Some("phc_x"),
        extra: Some("{}"),
    }
}

/// The top-level keys as written (serde_json's map sorts them).
fn keys_in_order<'a>(text: &str, value: &'a serde_json::Value) -> Vec<&'a str> {
    let mut keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_by_key(|key| text.find(&format!("\"{key}\":")).unwrap());
    keys
}

fn event_text(row: &EventRowRef<'_>) -> String {
    let mut out = String::new();
    event_row(row, &mut out);
    out
}

#[test]
fn event_rows_have_hogflares_shape_with_none_left_out() {
    let text = event_text(&event(Some(r#"{"$current_url":"https://a.example/","n":[1,2]}"#)));
    assert_eq!(
        text,
        concat!(
            r#"{"uuid":"00000000-0000-0000-0000-000000000001","source":"posthog","event":"$pageview","#,
            r#""distinct_id":"user \"1\"","created_at":"2023-11-14T22:13:20.123456Z","#,
            r#""timestamp":"2023-11-14T22:13:20.000000Z","#,
            r#""properties":{"$current_url":"https://a.example/","n":[1,2]},"group1":"acme","api_key":"phc_x"}"#
        )
    );
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        value["properties"].is_object(),
        "JSON columns are JSON values, not text"
    );
}

#[test]
fn every_optional_column_is_written_when_present() {
    let mut row = event(Some("null"));
    row.team_id = Some(2);
    row.context = Some(r#"{"ip":"1.2.3.4"}"#);
    row.person_id = Some("p");
    row.person_created_at = Some(0);
    row.person_properties = Some(r#"{"plan":"pro"}"#.into());
    row.group_properties = Some(r#"{"company":{"size":3}}"#);
    row.extra = Some(r#"{"$sent_at":"x"}"#);
    let text = event_text(&row);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys = keys_in_order(&text, &value);
    assert_eq!(
        keys,
        [
            "uuid",
            "team_id",
            "source",
            "event",
            "distinct_id",
            "created_at",
            "timestamp",
            "context",
            "person_id",
            "person_created_at",
            "person_properties",
            "group1",
            "group_properties",
            "api_key",
            "extra"
        ]
    );
    assert_eq!(value["team_id"], 2);
    assert_eq!(value["extra"]["$sent_at"], "x");
    assert_eq!(value["person_created_at"], "1970-01-01T00:00:00.000000Z");
}

#[test]
fn person_rows_have_hogflares_shape() {
    let plan = PropertyUpdate::of(&[("plan", r#""pro""#)], &[], &[]);
    let mut person = Person::new(7, Uuid::from_u128(2), 5, "anon", &plan);
    person.apply("e", &PropertyUpdate::of(&[], &[("ref", r#""ad""#)], &[]));
    person.distinct_ids.push("user@example.com".into());
    let mut stored = Vec::new();
    person.encode(&mut stored);
    let encoded = PersonSnapshotOf {
        uuid: Uuid::from_u128(3),
        team_id: None,
        operation: "identify",
        person: &stored,
        canonical_distinct_id: "anon",
        updated_at: 9,
        api_key: Some("phc"),
        source_event_uuid: Uuid::from_u128(4),
    }
    .encode()
    .unwrap();
    let OutboxRecordRef::Person(snapshot) = OutboxRecordRef::decode(&encoded).unwrap() else {
        panic!("a person row")
    };
    let mut text = String::new();
    person_row(&snapshot, &mut text);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys = keys_in_order(&text, &value);
    assert_eq!(
        keys,
        [
            "uuid",
            "source",
            "operation",
            "person_id",
            "person_int_id",
            "canonical_distinct_id",
            "distinct_ids",
            "created_at",
            "updated_at",
            "version",
            "properties",
            "properties_set_once",
            "merged_properties",
            "api_key",
            "source_event_uuid"
        ]
    );
    assert_eq!(value["source"], "hogflare");
    assert_eq!(value["person_int_id"], 7);
    assert_eq!(value["person_id"], "00000000-0000-0000-0000-000000000002");
    assert_eq!(value["distinct_ids"], serde_json::json!(["anon", "user@example.com"]));
    assert_eq!(value["properties"], serde_json::json!({"plan": "pro"}));
    assert_eq!(value["properties_set_once"], serde_json::json!({"ref": "ad"}));
    assert_eq!(
        value["merged_properties"],
        serde_json::json!({"plan": "pro", "ref": "ad"})
    );
    assert_eq!(value["updated_at"], "1970-01-01T00:00:00.000009Z");
}

#[test]
fn bodies_stay_under_the_limit_and_are_never_empty() {
    let mut lanes = Lanes::new(1, 1_000);
    let row = format!(r#"{{"x":"{}"}}"#, "a".repeat(92)); // 100 bytes
    for _ in 0..25 {
        lanes.push("d", &row);
    }
    let out = lanes.finish();
    assert_eq!(out.rows, 25);
    assert_eq!(out.oversized, 0);
    // 9 rows: `[` + 9·100 + 8 commas + `]` = 910; a tenth would make 1011.
    assert_eq!(out.lanes[0].iter().map(Vec::len).collect::<Vec<_>>(), [910, 910, 708]);
    for body in &out.lanes[0] {
        let rows: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap();
        assert!(!rows.is_empty() && body.len() <= 1_000);
    }
    assert!(Lanes::new(4, 1_000).finish().lanes.is_empty());
}

#[test]
fn a_row_over_the_limit_goes_alone() {
    let mut lanes = Lanes::new(1, 100);
    lanes.push("d", r#"{"a":1}"#);
    lanes.push("d", &format!(r#"{{"x":"{}"}}"#, "b".repeat(200)));
    lanes.push("d", r#"{"a":2}"#);
    let out = lanes.finish();
    assert_eq!(out.oversized, 1);
    assert_eq!(out.count(), 3);
}

#[test]
fn each_key_keeps_to_one_lane_in_order() {
    let mut lanes = Lanes::new(4, 200);
    for n in 0..1_000 {
        let key = format!("user-{}", n % 37);
        lanes.push(&key, &format!(r#"{{"d":"{key}","n":{n}}}"#));
    }
    let out = lanes.finish();
    assert_eq!(out.lanes.len(), 4, "37 keys spread over every lane");
    let mut lane_of = std::collections::HashMap::new();
    let mut last = std::collections::HashMap::new();
    for (lane, bodies) in out.lanes.iter().enumerate() {
        for body in bodies {
            let rows: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap();
            for row in rows {
                let key = row["d"].as_str().unwrap().to_owned();
                let n = row["n"].as_u64().unwrap();
                assert_eq!(*lane_of.entry(key.clone()).or_insert(lane), lane);
                assert!(last.insert(key, n).is_none_or(|before| before < n));
            }
        }
    }
    assert_eq!(last.len(), 37);
    assert_eq!(out.rows, 1_000);
}

/// An event of the store tests: `e` of `d`, its uuid made from `n`.
fn stored_event(n: u128) -> NormalizedEvent {
    NormalizedEvent {
        uuid: Uuid::from_u128(n + 1),
        event: "e".into(),
        distinct_id: "d".into(),
        timestamp: chrono::Utc::now(),
        properties: "{}".into(),
        context: None,
        extra: None,
        person: PersonEvent::default(),
        cookieless: None,
    }
}

/// A store holding `events`, committed as one request.
fn store_with(events: impl Iterator<Item = NormalizedEvent>) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        map_size: 256 << 20,
        max_readers: 16,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), &config).unwrap();
    let request = DecodedRequest {
        token: "phc".into(),
        team_id: None,
        created_at: chrono::Utc::now(),
        events: events.collect(),
        dropped: std::collections::BTreeMap::new(),
        warnings: std::collections::BTreeMap::new(),
        filtered: 0,
        results: None,
        source: SOURCE_POSTHOG,
    };
    let options = CommitOptions {
        dedupe_window_days: 7,
        max_outbox_bytes: u64::MAX,
        now: chrono::Utc::now(),
    };
    store.commit(vec![request], options).unwrap();
    (dir, store)
}

#[test]
fn the_store_gives_one_mb_bodies_per_stream() {
    let big = format!(r#"{{"blob":"{}"}}"#, "z".repeat(10_000));
    let (_dir, store) = store_with((0..300).map(|n| NormalizedEvent {
        properties: big.clone(),
        person: PersonEvent {
            mode: PersonMode::Without,
            ..PersonEvent::default()
        },
        ..stored_event(n)
    }));
    let limits = BodyLimits {
        max_body_bytes: 1_000_000,
        lanes: 1,
        persons: true,
    };
    let chunk = pipeline(&store, 0, 10_000, u64::MAX, limits).unwrap();
    assert_eq!((chunk.positions, chunk.last_seq, chunk.events.rows), (300, 300, 300));
    assert_eq!(chunk.events.count(), 4);
    assert!(chunk.persons.lanes.is_empty());
    let mut seen = 0;
    for body in chunk.events.lanes.concat() {
        assert!(body.len() <= 1_000_000);
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        assert!(rows.iter().all(|row| row["properties"]["blob"].is_string()));
        seen += rows.len();
    }
    assert_eq!(seen, 300);
    let rest = pipeline(&store, 200, 10_000, u64::MAX, limits).unwrap();
    assert_eq!((rest.positions, rest.last_seq), (100, 300));
}

#[test]
fn an_event_and_its_persons_snapshot_go_to_their_two_streams() {
    let (_dir, store) = store_with((0..3).map(|n| NormalizedEvent {
        distinct_id: "user".into(),
        person: PersonEvent {
            update: PropertyUpdate::of(&[("n", &n.to_string())], &[], &[]),
            ..PersonEvent::default()
        },
        ..stored_event(n)
    }));
    let limits = |persons| BodyLimits {
        max_body_bytes: 1_000_000,
        lanes: 1,
        persons,
    };
    let rows = |bodies: &Bodies| -> Vec<serde_json::Value> {
        bodies
            .lanes
            .concat()
            .iter()
            .flat_map(|body| serde_json::from_slice::<Vec<serde_json::Value>>(body).unwrap())
            .collect()
    };

    // Each event row shows the person as its own update left it, as does the snapshot beside it.
    let chunk = pipeline(&store, 0, 10_000, u64::MAX, limits(true)).unwrap();
    assert_eq!((chunk.positions, chunk.last_seq), (6, 6));
    let (events, persons) = (rows(&chunk.events), rows(&chunk.persons));
    assert_eq!((events.len(), persons.len()), (3, 3));
    for (n, (event, person)) in events.iter().zip(&persons).enumerate() {
        let first = &events[0]["uuid"];
        assert_eq!(
            event["person_properties"],
            serde_json::json!({"n": n, "$creator_event_uuid": first})
        );
        assert_eq!(
            person["merged_properties"],
            serde_json::json!({"n": n, "$creator_event_uuid": first})
        );
        assert_eq!(person["source_event_uuid"], event["uuid"]);
    }
    // Without the persons stream the positions are the same; a sink resumes between entries.
    let events_only = pipeline(&store, 2, 10_000, u64::MAX, limits(false)).unwrap();
    assert_eq!((events_only.positions, events_only.last_seq), (4, 6));
    assert_eq!(rows(&events_only.events).len(), 2);
    assert!(events_only.persons.lanes.is_empty());
}
