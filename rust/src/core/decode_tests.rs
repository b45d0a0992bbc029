use super::*;
use serde_json::Value;

fn config() -> DecoderConfig {
    DecoderConfig {
        team_id: Some(7),
        ..DecoderConfig::default()
    }
}

/// Real requests recorded from the SDKs (`tests/fixtures/record.py`), decoded as the server would.
#[test]
fn real_sdk_payloads() {
    let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    // How many events each recording holds; the Python tests read the same file.
    let expected: std::collections::BTreeMap<String, usize> =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/expected.json")).unwrap()).unwrap();
    for (name, expected) in expected {
        let meta: Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{dir}/{name}.json")).unwrap()).unwrap();
        let body = std::fs::read(format!("{dir}/{name}.body")).unwrap();
        let header = |key: &str| meta["headers"][key].as_str();
        let parts = RequestParts {
            route: route_for_path(meta["path"].as_str().unwrap()).unwrap(),
            body: &body,
            query: meta["query"].as_str().unwrap().as_bytes(),
            content_type: header("content-type"),
            content_encoding: header("content-encoding"),
        };
        let decoded = decode(&parts, HeaderFacts::default(), &config(), Utc::now()).unwrap();
        assert_eq!(decoded.token, "phc_fixture_token", "{name}");
        assert_eq!(decoded.events.len(), expected, "{name}");
        assert!(decoded.dropped.is_empty(), "{name}: {:?}", decoded.dropped);
        for event in &decoded.events {
            assert!(!event.distinct_id.is_empty() && !event.event.is_empty(), "{name}");
        }
    }
}

fn props(event: &NormalizedEvent) -> Value {
    serde_json::from_str(&event.properties).unwrap()
}

fn decode_json(route: RouteKind, body: &Value) -> Result<DecodedRequest> {
    let bytes = body.to_string();
    decode(
        &RequestParts::posted(route, bytes.as_bytes()),
        HeaderFacts::default(),
        &config(),
        Utc::now(),
    )
}

#[test]
fn bad_items_are_dropped_and_counted_while_good_ones_stay() {
    let body = serde_json::json!({"api_key": "phc", "batch": [
        {"event": "ok", "distinct_id": "a"},
        {"event": "no id"},
        {"distinct_id": "no name"},
        {"event": "bad uuid", "distinct_id": "a", "uuid": "nope"},
        {"event": "$performance_event", "distinct_id": "a"},
        {"event": "$identify", "distinct_id": "a", "properties": {"$process_person_profile": false}},
        {"event": "$identify", "distinct_id": "a", "properties": {"$process_person_profile": "false"}},
        {"event": "cookieless", "distinct_id": "a", "properties": {"$cookieless_mode": "yes"}},
        {"event": "cookieless", "distinct_id": "a", "properties": {"$cookieless_mode": false}},
        "not an object",
    ]});
    let decoded = decode_json(RouteKind::Event, &body).unwrap();
    // Only a boolean `false` turns person processing off, as on PostHog.
    assert_eq!(decoded.events.len(), 3);
    assert_eq!(decoded.filtered, 2);
    let dropped: Vec<(&str, u32)> = decoded.dropped.iter().map(|(r, n)| (r.as_str(), *n)).collect();
    assert_eq!(
        dropped,
        vec![
            ("not_an_object", 1),
            ("missing_event_name", 1),
            ("missing_distinct_id", 1),
            ("invalid_uuid", 1),
            ("invalid_cookieless_mode", 1)
        ]
    );
}

#[test]
fn group_identifies_posthog_would_discard_are_discarded() {
    let group = |key: Value, set: Value| {
        serde_json::json!({"event": "$groupidentify", "distinct_id": "u",
            "properties": {"$group_type": "company", "$group_key": key, "$group_set": set}})
    };
    let body = serde_json::json!({"api_key": "phc", "batch": [
        group("k".repeat(400).into(), serde_json::json!({"name": "Acme"})),
        group("é".repeat(400).into(), Value::Null),
        group(12345.into(), serde_json::json!({})),
        group("k".repeat(401).into(), serde_json::json!({})),
        // Characters as JavaScript counts them: 😀 is two.
        group("😀".repeat(201).into(), serde_json::json!({})),
        group("acme".into(), "Acme".into()),
        group("acme".into(), serde_json::json!(["name"])),
    ]});
    // PostHog's capture says ok to them, and its ingestion then discards them.
    let decoded = decode_json(RouteKind::Event, &body).unwrap();
    assert_eq!(decoded.events.len(), 3);
    assert_eq!(decoded.filtered, 4);
    assert!(decoded.dropped.is_empty());
}

#[test]
fn a_request_with_only_bad_items_is_an_error_that_names_them() {
    let err = decode_json(RouteKind::Event, &serde_json::json!({"event": "x", "token": "phc"})).unwrap_err();
    assert_eq!(err.to_string(), "no valid event in request (missing_distinct_id: 1)");
}

#[test]
fn tokens() {
    let mixed = serde_json::json!([{"event": "a", "distinct_id": "d", "token": "t1"}, {"event": "b", "distinct_id": "d", "token": "t2"}]);
    assert!(matches!(
        decode_json(RouteKind::Event, &mixed),
        Err(CoreError::MultipleTokens)
    ));
    // A dropped item's token does not count against the kept ones.
    let dropped_other =
        serde_json::json!([{"event": "a", "distinct_id": "d", "token": "t1"}, {"event": "b", "token": "t2"}]);
    assert_eq!(decode_json(RouteKind::Event, &dropped_other).unwrap().token, "t1");
    // A lone item with bad properties is a 400 about the item, not a 401.
    let bad_properties = serde_json::json!({"api_key": "phc", "event": "a", "distinct_id": "d", "properties": 7});
    assert!(matches!(
        decode_json(RouteKind::Event, &bad_properties),
        Err(CoreError::NoValidEvent { .. })
    ));
    // posthog-js sends its token only in the properties; a dropped item still names it.
    let cookieless = serde_json::json!([{"event": "a", "distinct_id": "d",
        "properties": {"token": "phc", "$cookieless_mode": "yes"}}]);
    assert!(matches!(
        decode_json(RouteKind::Event, &cookieless),
        Err(CoreError::NoValidEvent { .. })
    ));
    let none = serde_json::json!([{"event": "a", "distinct_id": "d"}]);
    assert!(matches!(decode_json(RouteKind::Event, &none), Err(CoreError::NoToken)));
    let partial =
        serde_json::json!([{"event": "a", "distinct_id": "d", "token": "t1"}, {"event": "b", "distinct_id": "d"}]);
    assert_eq!(decode_json(RouteKind::Event, &partial).unwrap().token, "t1");
    let personal = serde_json::json!({"event": "a", "distinct_id": "d", "api_key": "phx_secret"});
    assert!(matches!(
        decode_json(RouteKind::Event, &personal),
        Err(CoreError::InvalidToken(_))
    ));
}

#[test]
fn route_defaults_for_items_without_an_event_name() {
    let body = serde_json::json!({"api_key": "phc", "distinct_id": "d", "$set": {"plan": "pro"}});
    let decoded = decode_json(RouteKind::Engage, &body).unwrap();
    assert_eq!(decoded.events[0].event, "$identify");
    assert_eq!(props(&decoded.events[0])["$set"]["plan"], "pro");
    let alias = serde_json::json!({"api_key": "phc", "distinct_id": "d", "alias": "e"});
    let decoded = decode_json(RouteKind::Alias, &alias).unwrap();
    assert_eq!(
        (decoded.events[0].event.as_str(), &props(&decoded.events[0])["alias"]),
        ("$create_alias", &Value::from("e"))
    );
}

/// The distinct id of each event of a `/e` body, as decoded.
fn distinct_ids(body: &[u8]) -> Vec<String> {
    let parts = RequestParts::posted(RouteKind::Event, body);
    let decoded = decode(&parts, HeaderFacts::default(), &config(), Utc::now()).unwrap();
    decoded.events.into_iter().map(|e| e.distinct_id).collect()
}

#[test]
fn distinct_ids_are_stringified_cleaned_and_cut() {
    let long = "x".repeat(300);
    let body = serde_json::json!({"api_key": "phc", "batch": [
        {"event": "a", "distinct_id": 42},
        {"event": "a", "properties": {"distinct_id": "in-props"}},
        {"event": "a", "$distinct_id": "dollar"},
        {"event": "a", "distinct_id": "nul\u{0}byte"},
        {"event": "a", "distinct_id": long},
        {"event": "a", "distinct_id": {"id": 1}},
        {"event": "a", "distinct_id": "  "},
        {"event": "a", "distinct_id": ""},
        {"event": "a", "properties": {"distinct_id": ["b", 1.5]}},
    ]});
    let mut text = body.to_string();
    // Objects as the SDK wrote them, spaced and in its own order, read as PostHog's capture writes
    // them; a number keeps its digits, even past 64 bits.
    let spaced = r#"{"event": "a", "distinct_id": {"b": 1, "a": [1, 2.50]}}"#;
    let in_properties = r#"{"event": "a", "properties": {"distinct_id": {"b": 1, "a": [1, 2.50]}}}"#;
    let number = r#"{"event": "a", "distinct_id": -9223372036854775809}"#;
    text.insert_str(text.len() - 2, &format!(",{spaced},{in_properties},{number}"));
    assert_eq!(
        distinct_ids(text.as_bytes()),
        vec![
            "42",
            "in-props",
            "dollar",
            "nul\u{FFFD}byte",
            &"x".repeat(200),
            r#"{"id":1}"#,
            "  ",
            r#"["b",1.5]"#,
            r#"{"a":[1,2.5],"b":1}"#,
            r#"{"a":[1,2.5],"b":1}"#,
            "-9223372036854775809",
        ]
    );
}

#[test]
fn process_person_profile_is_kept_only_where_it_turns_persons_off() {
    // PostHog's `normalizeProcessPerson`: the default goes from the row (posthog-js sends it on
    // every event), `false` stays, and a personless event keeps no group columns either.
    let body = serde_json::json!({"api_key": "phc", "batch": [
        {"event": "e", "distinct_id": "a", "properties": {"$process_person_profile": true, "x": 1}},
        {"event": "e", "distinct_id": "a", "properties": {"x": 1, "$process_person_profile": "false"}},
        {"event": "e", "distinct_id": "a", "properties": {"$process_person_profile": false,
            "$group_0": "sent", "$group_4": "too", "$group_5": "kept", "$set": {"a": 1}}},
        {"event": "e", "distinct_id": "a", "properties": {"$process_person_profile": true,
            "$set": {"a": 1}, "$group_0": "kept"}, "$set_once": {"b": 2}},
    ]});
    let decoded = decode_json(RouteKind::Event, &body).unwrap();
    let all: Vec<Value> = decoded.events.iter().map(props).collect();
    assert_eq!(all[0], serde_json::json!({"x": 1}));
    assert_eq!(all[1], serde_json::json!({"x": 1}));
    assert_eq!(
        all[2],
        serde_json::json!({"$process_person_profile": false, "$group_5": "kept"})
    );
    assert_eq!(all[3]["$set"], serde_json::json!({"a": 1}));
    assert_eq!(all[3]["$set_once"], serde_json::json!({"b": 2}));
    assert_eq!(all[3]["$group_0"], "kept");
    assert!(all[3].get("$process_person_profile").is_none());
    assert_eq!(
        decoded.events[2].person.mode,
        crate::core::person_event::PersonMode::Personless
    );
    // A flag read that asks for a person still makes one, though the request left the row.
    let flag = serde_json::json!({"api_key": "phc", "batch": [{"event": "$feature_flag_called",
        "distinct_id": "a", "properties": {"$feature_flag": "f", "$process_person_profile": true}}]});
    let decoded = decode_json(RouteKind::Event, &flag).unwrap();
    assert_eq!(
        decoded.events[0].person.mode,
        crate::core::person_event::PersonMode::Full
    );
    assert!(props(&decoded.events[0]).get("$process_person_profile").is_none());
}
