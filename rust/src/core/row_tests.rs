use super::*;

#[test]
fn outbox_records_round_trip() {
    let row = EventRow {
        uuid: Uuid::now_v7(),
        team_id: Some(1),
        source: SOURCE_POSTHOG.into(),
        event: "$pageview".into(),
        distinct_id: "user".into(),
        created_at: 1_700_000_000_000_000,
        timestamp: Some(1_700_000_000_000_001),
        properties: Some(r#"{"a":1}"#.into()),
        context: None,
        person_id: None,
        person_created_at: None,
        person_properties: None,
        groups: [Some("g".into()), None, None, None, None],
        group_properties: None,
        api_key: Some("phc".into()),
        extra: None,
    };
    let record = OutboxRecord::Event(row.clone());
    let encoded = record.encode().unwrap();
    assert_eq!(OutboxRecord::decode(&encoded).unwrap(), record);
    let OutboxRecordRef::Event(borrowed) = OutboxRecordRef::decode(&encoded).unwrap() else {
        panic!("an event row")
    };
    assert_eq!(
        (borrowed.uuid, borrowed.properties, borrowed.groups[0]),
        (row.uuid, Some(r#"{"a":1}"#), Some("g"))
    );
    // A damaged byte in any of its texts makes the entry unreadable rather than misread.
    for text in [&b"$pageview"[..], b"user", br#"{"a":1}"#, b"phc"] {
        let at = encoded.windows(text.len()).position(|window| window == text).unwrap();
        let mut damaged = encoded.clone();
        damaged[at] = 0xff;
        assert!(OutboxRecordRef::decode(&damaged).is_err(), "{text:?}");
    }
    // The first group: `Some` (1), its length (1), then its one byte.
    let at = encoded.windows(3).position(|window| window == [1, 1, b'g']).unwrap();
    let mut damaged = encoded.clone();
    damaged[at + 2] = 0xff;
    assert!(OutboxRecordRef::decode(&damaged).is_err(), "the group");
}

#[test]
fn person_snapshots_round_trip_and_split_their_properties() {
    let update = crate::core::person::PropertyUpdate::of(&[("plan", r#""pro""#)], &[("ref", r#""ad""#)], &[]);
    let person = Person::new(7, Uuid::nil(), 5, "anon", &update);
    let mut encoded_person = Vec::new();
    person.encode(&mut encoded_person);
    let snapshot = PersonSnapshotOf {
        uuid: Uuid::now_v7(),
        team_id: None,
        operation: "identify",
        person: &encoded_person,
        canonical_distinct_id: "anon",
        updated_at: 9,
        api_key: Some("phc"),
        source_event_uuid: Uuid::nil(),
    };
    let encoded = snapshot.encode().unwrap();
    let OutboxRecord::Person(owned) = OutboxRecord::decode(&encoded).unwrap() else {
        panic!("a person row")
    };
    assert_eq!((&owned.person, owned.operation.as_str()), (&person, "identify"));
    let OutboxRecordRef::Person(borrowed) = OutboxRecordRef::decode(&encoded).unwrap() else {
        panic!("a person row")
    };
    assert_eq!(borrowed.person.properties_json(None), r#"{"ref":"ad","plan":"pro"}"#);
    assert_eq!(borrowed.person.properties_json(Some(false)), r#"{"plan":"pro"}"#);
    assert_eq!(borrowed.person.properties_json(Some(true)), r#"{"ref":"ad"}"#);
    assert_eq!(rows_in_entry(&encoded), 1);
}

#[test]
fn an_event_and_its_persons_snapshot_share_one_entry() {
    let update = crate::core::person::PropertyUpdate::of(&[("plan", r#""pro""#)], &[], &[]);
    let person = Person::new(3, Uuid::nil(), 5, "user", &update);
    let mut encoded_person = Vec::new();
    person.encode(&mut encoded_person);
    let event = EventRow {
        person_id: Some(Uuid::nil().to_string()),
        ..EventRow::from_event(
            NormalizedEvent {
                uuid: Uuid::now_v7(),
                event: "$pageview".into(),
                distinct_id: "user".into(),
                timestamp: chrono::Utc::now(),
                properties: "{}".into(),
                context: None,
                extra: None,
                person: crate::core::person_event::PersonEvent::default(),
                cookieless: None,
            },
            SOURCE_POSTHOG,
            "phc",
            None,
            1,
        )
    };
    let snapshot = PersonSnapshotOf {
        uuid: Uuid::now_v7(),
        team_id: None,
        operation: "capture",
        person: &encoded_person,
        canonical_distinct_id: "user",
        updated_at: 9,
        api_key: Some("phc"),
        source_event_uuid: event.uuid,
    };
    let mut encoded = Vec::new();
    snapshot.encode_with_event(&event, None, None, &mut encoded).unwrap();
    assert_eq!(rows_in_entry(&encoded), 2);

    let (Some(row), Some(person_row)) = OutboxRecordRef::decode(&encoded).unwrap().rows(unresolved).unwrap() else {
        panic!("an event row and a person row")
    };
    assert_eq!(row.person_properties.as_deref(), Some(r#"{"plan":"pro"}"#));
    assert_eq!((row.uuid, person_row.source_event_uuid), (event.uuid, event.uuid));
    let (Some(owned), Some(owned_person)) = OutboxRecord::decode(&encoded).unwrap().rows() else {
        panic!("an event row and a person row")
    };
    assert_eq!(owned.person_properties.as_deref(), Some(r#"{"plan":"pro"}"#));
    assert_eq!(owned_person.person, person);

    // What the event showed over the person is laid over its properties on its row only.
    encoded.clear();
    let shown = r#"{"plan":"team","x":1}"#;
    snapshot
        .encode_with_event(&event, Some(shown), None, &mut encoded)
        .unwrap();
    assert_eq!(rows_in_entry(&encoded), 2);
    let (Some(row), Some(person_row)) = OutboxRecordRef::decode(&encoded).unwrap().rows(unresolved).unwrap() else {
        panic!("an event row and a person row")
    };
    assert_eq!(row.person_properties.as_deref(), Some(r#"{"plan":"team","x":1}"#));
    assert_eq!(person_row.person.json(), r#"{"plan":"pro"}"#);
    let (Some(owned), _) = OutboxRecord::decode(&encoded).unwrap().rows() else {
        panic!("an event row")
    };
    assert_eq!(owned.person_properties.as_deref(), Some(r#"{"plan":"team","x":1}"#));
}
