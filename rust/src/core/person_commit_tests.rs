//! What one commit does to the persons its events touch: duplicates change nothing, an update
//! is written only when it changes something (or its event forces it), many events in one
//! commit leave persons as one commit each does, distinct ids longer than an LMDB key are found
//! again, and recordings create none.

use uuid::Uuid;

use super::person_store_tests::{capture, identify, without_creator, Harness, TOKEN};
use super::persons::person_uuid;
use super::request::RouteKind;
use super::row::PersonSnapshot;

#[test]
fn duplicates_change_no_person() {
    let mut h = Harness::new();
    let uuid = Uuid::now_v7().to_string();
    let event = serde_json::json!({"event": "e", "distinct_id": "d", "uuid": uuid, "properties": {"$set": {"n": 1}}});
    h.send(serde_json::json!([event]));
    let again = serde_json::json!({"event": "e", "distinct_id": "d", "uuid": uuid, "properties": {"$set": {"n": 2}}});
    let (events, snapshots, _) = h.send(serde_json::json!([again]));
    assert!(events.is_empty() && snapshots.is_empty());
    assert_eq!(without_creator(&h.person("d").unwrap().properties_json()), r#"{"n":1}"#);
}

#[test]
fn a_repeated_update_changes_the_person_whenever_it_would_change_something() {
    // One client's batch often repeats an update: a repeat of one that changed nothing is
    // skipped, but not once another update changed the person in between.
    let mut h = Harness::new();
    let set = |plan: &str| capture("user", serde_json::json!({"$set": {"plan": plan}}));
    let (_, snapshots, _) = h.send(serde_json::json!([
        set("pro"),
        set("pro"),
        set("free"),
        set("pro"),
        set("pro")
    ]));
    let seen: Vec<(&str, u64)> = snapshots
        .iter()
        .map(|s| (s.person.get("plan").unwrap().0, s.person.version))
        .collect();
    let v = seen[0].1;
    assert_eq!(
        seen,
        [
            (r#""pro""#, v),
            (r#""pro""#, v),
            (r#""free""#, v + 1),
            (r#""pro""#, v + 2),
            (r#""pro""#, v + 2)
        ]
    );
}

#[test]
fn an_update_that_changed_nothing_is_still_written_when_a_later_event_forces_it() {
    // A fast-changing key alone is not worth a write, except for the events that force one.
    let mut h = Harness::new();
    let url = |event: &str, url: &str| serde_json::json!({"event": event, "distinct_id": "user", "properties": {"$set": {"$current_url": url}}});
    h.send(serde_json::json!([url("e", "/a")]));
    let (_, snapshots, _) = h.send(serde_json::json!([url("e", "/b"), url("e", "/b"), url("$set", "/b")]));
    let seen: Vec<(&str, u64)> = snapshots
        .iter()
        .map(|s| (s.person.get("$current_url").unwrap().0, s.person.version))
        .collect();
    let v = seen[0].1;
    assert_eq!(seen, [(r#""/a""#, v), (r#""/a""#, v), (r#""/b""#, v + 1)]);
}

#[test]
fn one_commit_of_many_events_leaves_persons_as_one_commit_each_does() {
    // Updates repeat often here, so a commit of them all skips many as unchanged: each event's
    // snapshot, and the persons in the end, must be what committing the events one by one gives.
    let updates = [
        serde_json::json!({"$set": {"plan": "pro"}}),
        serde_json::json!({"$set": {"plan": "free", "$current_url": "/a"}}),
        serde_json::json!({"$set": {"$current_url": "/b"}, "$set_once": {"first": 1}}),
        serde_json::json!({"$set_once": {"plan": "trial"}, "$unset": ["first"]}),
        serde_json::json!({"$set": {"plan": "pro"}, "$unset": ["plan"]}),
    ];
    let names = ["e", "e", "$set", "$exception"];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut below = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let events: Vec<serde_json::Value> = (0..200)
        .map(|_| {
            let user = ["u1", "u2"][below(2)];
            serde_json::json!({
                "event": names[below(names.len())],
                "distinct_id": user,
                "properties": updates[below(updates.len())],
            })
        })
        .collect();
    let (mut together, mut apart) = (Harness::new(), Harness::new());
    let (_, at_once, _) = together.send(serde_json::Value::Array(events.clone()));
    let one_by_one: Vec<PersonSnapshot> = events
        .into_iter()
        .flat_map(|event| apart.send(serde_json::json!([event])).1)
        .collect();
    let seen = |snapshots: &[PersonSnapshot]| -> Vec<(String, u64)> {
        snapshots
            .iter()
            .map(|s| (without_creator(&s.person.properties_json()), s.person.version))
            .collect()
    };
    assert_eq!(seen(&at_once), seen(&one_by_one));
    for user in ["u1", "u2"] {
        let (a, b) = (together.person(user).unwrap(), apart.person(user).unwrap());
        assert_eq!(
            (a.id, a.version, without_creator(&a.properties_json()), a.distinct_ids),
            (b.id, b.version, without_creator(&b.properties_json()), b.distinct_ids)
        );
    }
}

#[test]
fn names_longer_than_an_lmdb_key_are_stored_and_found_again() {
    // PostHog's limits are in characters: 200 four-byte characters are 800 bytes, 400 two-byte
    // ones 800, and LMDB keys hold 511.
    let long_id = "😀".repeat(200);
    let other_id = format!("{}😁", "😀".repeat(199));
    let group_type = "é".repeat(400);
    let group_key = "ü".repeat(400);
    let mut h = Harness::new();
    h.send(serde_json::json!([
        capture(&long_id, serde_json::json!({"$set": {"a": 1}})),
        capture(&other_id, serde_json::json!({"$set": {"a": 2}})),
        {"event": "$groupidentify", "distinct_id": long_id, "properties":
            {"$group_type": group_type, "$group_key": group_key, "$group_set": {"name": "Long"}}},
    ]));
    let (events, _, _) = h.send(serde_json::json!([
        identify("user", &long_id),
        capture(
            "user",
            serde_json::json!({"$groups": {group_type.clone(): group_key.clone()}})
        ),
    ]));
    let person = h.person("user").unwrap();
    assert_eq!(h.person(&long_id).unwrap().id, person.id);
    assert_eq!(without_creator(&person.properties_json()), r#"{"a":1}"#);
    assert_ne!(h.person(&other_id).unwrap().id, person.id);
    assert_eq!(events[1].groups[0].as_deref(), Some(group_key.as_str()));
    assert_eq!(
        events[1].group_properties.as_deref(),
        Some(format!(r#"{{"{group_type}":{{"name":"Long"}}}}"#).as_str())
    );
}

#[test]
fn a_recording_goes_with_an_existing_person_and_creates_none() {
    let mut h = Harness::new();
    let chunk = |distinct_id: &str| {
        serde_json::json!({"event": "$snapshot", "distinct_id": distinct_id, "properties":
            {"$session_id": "s1", "$snapshot_data": [{"type": 2, "timestamp": 1, "data": {}}]}})
    };
    let (events, snapshots, _) = h.send_to(RouteKind::Recording, serde_json::json!([chunk("visitor")]));
    assert!(h.person("visitor").is_none());
    assert!(snapshots.is_empty());
    assert_eq!(
        events[0].person_id.as_deref(),
        Some(person_uuid(TOKEN, "visitor").to_string().as_str())
    );
    h.send(serde_json::json!([capture(
        "user",
        serde_json::json!({"$set": {"plan": "pro"}})
    )]));
    let person = h.person("user").unwrap();
    let (events, snapshots, _) = h.send_to(RouteKind::Recording, serde_json::json!([chunk("user")]));
    assert_eq!(events[0].person_id.as_deref(), Some(person.uuid.to_string().as_str()));
    assert_eq!(
        events[0].person_properties.as_deref().map(without_creator).as_deref(),
        Some(r#"{"plan":"pro"}"#)
    );
    assert_eq!(snapshots[0].operation, "session_recording");
    assert_eq!(h.person("user").unwrap().version, person.version);
}

#[test]
fn a_flag_read_for_an_id_without_a_person_is_personless_and_for_a_known_one_is_not() {
    let mut h = Harness::new();
    let called = |distinct_id: &str, properties: serde_json::Value| serde_json::json!({"event": "$feature_flag_called", "distinct_id": distinct_id, "properties": properties});
    let flag = serde_json::json!({"$feature_flag": "f", "$feature_flag_response": true, "$set": {"a": 1}});
    let (events, snapshots, _) = h.send(serde_json::json!([called("stranger", flag.clone())]));
    assert!(h.person("stranger").is_none() && snapshots.is_empty());
    assert_eq!(
        events[0].person_id.as_deref(),
        Some(person_uuid(TOKEN, "stranger").to_string().as_str())
    );
    let properties: serde_json::Value = serde_json::from_str(events[0].properties.as_deref().unwrap()).unwrap();
    assert_eq!(
        properties,
        serde_json::json!({"$feature_flag": "f", "$feature_flag_response": true, "$process_person_profile": false})
    );

    // The id was recorded as personless: the person an identify makes of it keeps its uuid, so
    // the flag read's row goes with that person.
    let (_, _, _) = h.send(serde_json::json!([identify("user", "stranger")]));
    assert_eq!(h.person("user").unwrap().uuid, person_uuid(TOKEN, "stranger"));

    // A known id's flag read is personful: its `$set` lands and its row shows the person.
    let (events, snapshots, _) = h.send(serde_json::json!([called("user", flag.clone())]));
    assert_eq!(snapshots.len(), 1);
    assert!(without_creator(&h.person("user").unwrap().properties_json()).contains(r#""a":1"#));
    assert!(events[0].properties.as_deref().unwrap().contains(r#""$set""#));

    // Asking for person processing, or naming a group, keeps it personful for a stranger too.
    let asked = serde_json::json!({"$feature_flag": "f", "$process_person_profile": true});
    let grouped = serde_json::json!({"$feature_flag": "f", "$groups": {"company": "acme"}});
    h.send(serde_json::json!([called("asked", asked), called("grouped", grouped)]));
    assert!(h.person("asked").is_some() && h.person("grouped").is_some());
}
