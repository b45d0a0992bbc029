//! What events ask of persons and groups: property updates with the initial properties,
//! identity operations, groups and personless events, and the ids PostHog never merges on.

use super::*;

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn groups(items: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
        .collect()
}

#[test]
fn updates_and_initial_properties() {
    let read = PersonEvent::read(
        "$pageview",
        r#"{"$browser":"Chrome","utm_source":null,"$set":{"plan":"pro","$browser":"Firefox"},
           "$set_once":{"$initial_browser":"Safari"},"$unset":["old"]}"#,
    );
    assert_eq!(read.mode, PersonMode::Full);
    assert_eq!(
        read.update.set().collect::<Vec<_>>(),
        [
            ("plan", r#""pro""#),
            ("$browser", r#""Firefox""#),
            ("utm_source", "null")
        ]
    );
    assert_eq!(
        read.update.set_once().collect::<Vec<_>>(),
        [("$initial_browser", r#""Safari""#)]
    );
    assert_eq!(read.update.unset().collect::<Vec<_>>(), ["old"]);
}

#[test]
fn unset_is_read_as_posthog_reads_it() {
    // JavaScript's `Object.keys`: an array's strings, an object's keys, a string's positions
    // (in UTF-16 units), and nothing of a number or `true`.
    for (unset, keys) in [
        (r#"["a",1,null,"b"]"#, vec!["a", "b"]),
        (r#"{"a":true,"b":null}"#, vec!["a", "b"]),
        (r#""ab""#, vec!["0", "1"]),
        (r#""é😀""#, vec!["0", "1", "2"]),
        ("5", vec![]),
        ("true", vec![]),
        ("null", vec![]),
    ] {
        let read = PersonEvent::read("e", &format!(r#"{{"$unset":{unset}}}"#));
        assert_eq!(read.update.unset().collect::<Vec<_>>(), keys, "$unset: {unset}");
    }
}

#[test]
fn keys_keep_the_escapes_json_needs_and_lose_the_ones_it_does_not() {
    // Keys are kept as they stand in JSON: `\u0041` needs no escape, a quote and a tab do.
    let read = PersonEvent::read(
        "$pageview",
        r#"{"$set":{"pl\u0041n":"pro","say \"hi\"":1,"tab\there":2,"plain":3},
           "$set_once":{"once\\slash":4},"$browser":"Chrome"}"#,
    );
    assert_eq!(
        read.update.set().collect::<Vec<_>>(),
        [
            ("plAn", r#""pro""#),
            (r#"say \"hi\""#, "1"),
            (r"tab\there", "2"),
            ("plain", "3"),
            ("$browser", r#""Chrome""#)
        ]
    );
    assert_eq!(
        read.update.set_once().collect::<Vec<_>>(),
        [(r"once\\slash", "4"), ("$initial_browser", r#""Chrome""#)]
    );
}

#[test]
fn a_repeated_key_counts_at_its_first_occurrence() {
    // As a JSON reader that keeps the first of duplicate keys: a `null` first means absent.
    let read = PersonEvent::read(
        "$pageview",
        r#"{"$set":null,"$set":{"plan":"pro"},"$set_once":{"a":1},"$set_once":{"b":2},
           "$browser":null,"$browser":"Chrome","$anon_distinct_id":"first","$anon_distinct_id":"second"}"#,
    );
    assert_eq!(read.update.set().collect::<Vec<_>>(), [("$browser", "null")]);
    assert_eq!(
        read.update.set_once().collect::<Vec<_>>(),
        [("a", "1"), ("$initial_browser", r#""Chrome""#)]
    );
    let identify = PersonEvent::read(
        "$identify",
        r#"{"$anon_distinct_id":"first","$anon_distinct_id":"second"}"#,
    );
    assert_eq!(identify.identity.map(|op| op.other).as_deref(), Some("first"));
}

#[test]
fn properties_that_are_not_an_object_ask_nothing() {
    for properties in ["[]", "\"text\"", "{\"$set\":{\"a\":1}", "nul"] {
        assert_eq!(PersonEvent::read("$pageview", properties), PersonEvent::default());
    }
}

#[test]
fn initial_names_follow_their_properties() {
    for (key, initial) in [
        ("$app_build", "$initial_app_build"),
        ("$browser", "$initial_browser"),
        ("utm_source", "$initial_utm_source"),
        ("_kx", "$initial__kx"),
        ("sccid", "$initial_sccid"),
    ] {
        assert_eq!(initial_property(key).map(|index| INITIAL_NAMES[index]), Some(initial));
    }
    assert_eq!(initial_property("$initial_browser"), None);
}

#[test]
fn server_events_keep_the_os_out_and_snapshots_derive_nothing() {
    let read = PersonEvent::read("e", r#"{"$os":"Linux","$is_server":true,"gclid":"x"}"#);
    assert_eq!(read.update.set().collect::<Vec<_>>(), [("gclid", r#""x""#)]);
    assert!(PersonEvent::read("$snapshot_items", r#"{"$current_url":"/"}"#)
        .update
        .is_empty());
}

#[test]
fn identity_operations() {
    let identify = PersonEvent::read("$identify", r#"{"$anon_distinct_id":"anon"}"#);
    assert_eq!(
        identify.identity,
        Some(IdentityOp {
            kind: IdentityKind::Identify,
            other: "anon".into()
        })
    );
    let merge = PersonEvent::read("$merge_dangerously", r#"{"alias":7}"#);
    assert_eq!(
        merge.identity,
        Some(IdentityOp {
            kind: IdentityKind::MergeDangerously,
            other: "7".into()
        })
    );
    assert_eq!(PersonEvent::read("$pageview", r#"{"alias":"x"}"#).identity, None);
}

#[test]
fn groups_and_personless_events() {
    let group = PersonEvent::read(
        "$groupidentify",
        r#"{"$group_type":"company","$group_key":"acme","$group_set":{"name":"Acme"},"$set":{"a":1}}"#,
    );
    // The distinct id's person, unchanged: a group identify changes only its group.
    assert_eq!(group.mode, PersonMode::Full);
    assert!(group.update.is_empty() && group.identity.is_none());
    assert_eq!(group.groups, groups(&[("company", Some("acme"))]));
    assert_eq!(group.group_identify.unwrap().set, pairs(&[("name", r#""Acme""#)]));

    let personless = PersonEvent::read(
        "e",
        r#"{"$process_person_profile":false,"$set":{"a":1},"$groups":{"org":5}}"#,
    );
    assert_eq!(personless.mode, PersonMode::Personless);
    assert!(personless.update.is_empty());
    assert_eq!(personless.groups, groups(&[("org", Some("5"))]));

    // Exceptions and heatmaps only read persons, and keep their groups to map.
    for event in ["$exception", "$$heatmap"] {
        let read = PersonEvent::read(event, r#"{"$set":{"a":1},"$groups":{"org":"x"}}"#);
        assert_eq!(read.mode, PersonMode::Existing, "{event}");
        assert!(read.update.is_empty(), "{event}");
        assert_eq!(read.groups, groups(&[("org", Some("x"))]), "{event}");
    }

    // A type named without a key keeps its place: PostHog gives it a slot all the same.
    let unnamed = PersonEvent::read("e", r#"{"$groups":{"company":null,"team":"","org":0}}"#);
    assert_eq!(
        unnamed.groups,
        groups(&[("company", None), ("team", None), ("org", Some("0"))])
    );
}

#[test]
fn a_flag_read_is_personful_only_for_a_known_person_unless_it_says_otherwise() {
    let mode = |properties: &str| PersonEvent::read("$feature_flag_called", properties).mode;
    assert_eq!(mode(r#"{"$feature_flag":"f"}"#), PersonMode::FullIfKnown);
    assert_eq!(
        mode(r#"{"$groups":{},"$process_person_profile":null}"#),
        PersonMode::FullIfKnown
    );
    assert_eq!(mode(r#"{"$groups":{"org":"x"}}"#), PersonMode::Full);
    assert_eq!(mode(r#"{"$groups":{"org":null}}"#), PersonMode::Full);
    assert_eq!(mode(r#"{"$process_person_profile":true}"#), PersonMode::Full);
    assert_eq!(mode(r#"{"$process_person_profile":false}"#), PersonMode::Personless);
    // Its person update is read, for when the person exists.
    let read = PersonEvent::read("$feature_flag_called", r#"{"$set":{"a":1}}"#);
    assert_eq!(read.update.set().collect::<Vec<_>>(), [("a", "1")]);
}

#[test]
fn a_group_named_by_what_javascript_reads_as_false_is_not_identified() {
    let identify = |group_type: &str, group_key: &str| {
        let properties = format!(r#"{{"$group_type":{group_type},"$group_key":{group_key},"$group_set":{{}}}}"#);
        PersonEvent::read("$groupidentify", &properties).group_identify
    };
    for (group_type, group_key) in [
        (r#""team""#, "0"),
        (r#""team""#, "-0.0"),
        (r#""team""#, "false"),
        (r#""team""#, r#""""#),
        (r#""team""#, "null"),
        ("0", r#""red""#),
        ("false", r#""red""#),
    ] {
        assert_eq!(identify(group_type, group_key), None, "{group_type} {group_key}");
    }
    for (group_type, group_key, key) in [
        (r#""team""#, r#""0""#, "0"),
        (r#""team""#, "1", "1"),
        (r#""team""#, "true", "true"),
    ] {
        let identified = identify(group_type, group_key).expect(group_key);
        assert_eq!(
            (identified.group_type.as_str(), identified.group_key.as_str()),
            ("team", key)
        );
    }
}

#[test]
fn illegal_merge_ids() {
    for id in [
        "",
        "  ",
        "\u{feff}",
        "Anonymous",
        "null",
        "\"undefined\"",
        "'guest'",
        "[object Object]",
        "0",
        "None",
    ] {
        assert!(is_illegal_merge_id(id), "{id:?}");
    }
    // Space around an id makes it another id: only an id of nothing but space is illegal.
    for id in [
        "user-1",
        "Null",
        "NULL",
        "00",
        "nan",
        " anonymous ",
        "\u{85}",
        " null",
        "' guest'",
    ] {
        assert!(!is_illegal_merge_id(id), "{id:?}");
    }
}

#[test]
fn ids_of_other_types_read_as_javascript_writes_them() {
    for (raw, id) in [
        (r#"{"a":1}"#, "[object Object]"),
        ("[1,[2,null],true]", "1,2,,true"),
        ("[]", ""),
        ("12", "12"),
        ("1.0", "1"),
        ("-0", "0"),
        ("1.5e21", "1.5e+21"),
        ("0.0000001", "1e-7"),
        ("0.000001", "0.000001"),
        ("false", "false"),
    ] {
        let properties = format!(r#"{{"$anon_distinct_id":{raw}}}"#);
        let read = PersonEvent::read("$identify", &properties);
        assert_eq!(
            read.identity.map(|op| op.other),
            (!id.is_empty()).then(|| id.to_owned()),
            "{raw}"
        );
    }
}
