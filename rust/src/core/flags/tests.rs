//! Flags from both formats, evaluated whole; the operator-by-operator table is the shared fixture
//! in `tests/fixtures/flags/cases.json`, checked by `fixture_cases`.

use chrono::Utc;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use super::{FlagSet, Request};

fn evaluate(set: &FlagSet, distinct_id: &str, person: &str) -> Value {
    let request = Request {
        distinct_id,
        person_properties: person,
        groups: "{}",
        group_properties: "{}",
        ..Request::default()
    };
    sonic_rs::from_str(&set.evaluate_json(&request, Utc::now())).unwrap()
}

#[test]
fn hogflare_format_compiles_and_evaluates() {
    let hogflare = r#"[
        {"key": "beta", "rollout_percentage": 100, "payload": {"tier": "pro"},
         "conditions": [{"properties": [{"key": "plan", "op": "in", "value": ["pro", "team"]}]}]},
        {"key": "off", "active": false},
        {"key": "multi", "type": "multivariate", "variants": [{"key": "a", "rollout_percentage": 100, "payload": "x"}]}
    ]"#;
    let (set, problems) = FlagSet::compile(Some(hogflare), None);
    assert!(problems.is_empty(), "{problems:?}");
    let out = evaluate(&set, "u1", r#"{"plan": "PRO"}"#);
    let flags = out.get("flags").unwrap();
    assert_eq!(flags.get("beta").unwrap().get("enabled").unwrap().as_bool(), Some(true));
    assert_eq!(
        flags
            .get("beta")
            .unwrap()
            .get("metadata")
            .unwrap()
            .get("payload")
            .unwrap()
            .as_str(),
        Some(r#"{"tier":"pro"}"#)
    );
    assert_eq!(
        flags
            .get("off")
            .unwrap()
            .get("reason")
            .unwrap()
            .get("code")
            .unwrap()
            .as_str(),
        Some("flag_disabled")
    );
    assert_eq!(flags.get("multi").unwrap().get("variant").unwrap().as_str(), Some("a"));
    let out = evaluate(&set, "u1", r#"{"plan": "free"}"#);
    let reason = out.get("flags").unwrap().get("beta").unwrap().get("reason").unwrap();
    assert_eq!(reason.get("code").unwrap().as_str(), Some("no_condition_match"));
}

#[test]
fn bad_flags_are_reported_and_the_others_kept() {
    let hogflare = r#"[{"key": "good"}, {"key": "bad", "conditions": [{"properties": [{"key": "a", "op": "frobnicate"}]}]}, {"nokey": 1}]"#;
    let (set, problems) = FlagSet::compile(Some(hogflare), Some("{not json"));
    assert_eq!(set.keys().collect::<Vec<_>>(), ["good"]);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("frobnicate")));
    assert!(problems.iter().any(|p| p.starts_with("flags file:")));
}

#[test]
fn mistyped_fields_are_refused_not_ignored() {
    for flag in [
        r#"{"key": "a", "conditions": "everyone"}"#,
        r#"{"key": "b", "rollout_percentage": "lots"}"#,
        r#"{"key": "c", "rollout_percentage": 150}"#,
        r#"{"key": "d", "variants": "x"}"#,
        r#"{"key": "e", "type": "weird"}"#,
        r#"{"key": "f", "conditions": [{"properties": {"key": "plan"}}]}"#,
    ] {
        let (set, problems) = FlagSet::compile(Some(&format!("[{flag}]")), None);
        assert!(set.is_empty() && problems.len() == 1, "{flag}: {problems:?}");
    }
}

#[test]
fn definitions_round_trip_through_the_posthog_format() {
    let hogflare = r#"{"flags": [{"key": "g", "group_type": "company", "rollout_percentage": 50}], "group_type_mapping": {"0": "company"}}"#;
    let (set, problems) = FlagSet::compile(Some(hogflare), None);
    assert!(problems.is_empty(), "{problems:?}");
    let document = set.definitions_json();
    let (again, problems) = FlagSet::compile(None, Some(&document));
    assert!(problems.is_empty(), "{problems:?}");
    let parsed: Value = sonic_rs::from_str(&document).unwrap();
    assert_eq!(
        parsed.get("group_type_mapping").unwrap().get("0").unwrap().as_str(),
        Some("company")
    );
    for id in ["acme", "globex", "initech", "umbrella"] {
        let request = Request {
            distinct_id: "u",
            groups: &format!(r#"{{"company":"{id}"}}"#),
            person_properties: "{}",
            group_properties: "{}",
            ..Request::default()
        };
        assert_eq!(
            set.evaluate_json(&request, Utc::now()),
            again.evaluate_json(&request, Utc::now())
        );
    }
    let no_group = evaluate(&set, "u", "{}");
    let reason = no_group.get("flags").unwrap().get("g").unwrap().get("reason").unwrap();
    assert_eq!(reason.get("code").unwrap().as_str(), Some("no_group_type"));
    assert!(parsed.get("flags").unwrap().as_array().unwrap().len() == 1);
}

#[test]
fn remote_config_payloads_by_key_or_id() {
    let definitions = r#"{"flags": [
        {"id": 7, "key": "config", "is_remote_configuration": true,
         "filters": {"payloads": {"true": "{\"theme\":\"dark\"}"}}},
        {"id": 8, "key": "bare", "is_remote_configuration": true},
        {"id": 9, "key": "plain", "filters": {"payloads": {"true": "1"}}},
        {"id": 10, "key": "gone", "is_remote_configuration": true, "deleted": true}
    ]}"#;
    let (set, problems) = FlagSet::compile(None, Some(definitions));
    assert!(problems.is_empty(), "{problems:?}");
    let expected = Some(r#""{\"theme\":\"dark\"}""#.to_owned());
    assert_eq!(set.remote_config_payload("config"), expected);
    assert_eq!(set.remote_config_payload("7"), expected);
    assert_eq!(set.remote_config_payload("bare").as_deref(), Some("null"));
    for missing in ["plain", "gone", "nothing", "99"] {
        assert_eq!(set.remote_config_payload(missing), None, "{missing}");
    }
    // Served in the definitions, so the flag survives a round trip through them.
    let (again, _) = FlagSet::compile(None, Some(&set.definitions_json()));
    assert_eq!(again.remote_config_payload("config"), expected);
}

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/flags")
        .join(name);
    sonic_rs::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Evaluate one flag of a set for a fixture context; `Some(difference)` when it is not `expected`.
fn differs(set: &FlagSet, key: &str, context: &Value, expected: &Value) -> Option<String> {
    let text = |field: &str| {
        context
            .get(field)
            .map_or_else(|| "{}".to_owned(), |v| sonic_rs::to_string(v).unwrap())
    };
    let (person, groups, group_properties) = (text("person_properties"), text("groups"), text("group_properties"));
    let request = Request {
        distinct_id: context.get("distinct_id").and_then(|d| d.as_str()).unwrap_or_default(),
        person_properties: &person,
        groups: &groups,
        group_properties: &group_properties,
        anon_distinct_id: context.get("anon_distinct_id").and_then(|d| d.as_str()),
        hash_key_overrides: None,
        device_id: context.get("device_id").and_then(|d| d.as_str()),
        ..Request::default()
    };
    let out: Value = sonic_rs::from_str(&set.evaluate_json(&request, Utc::now())).unwrap();
    let got = out.get("flags").unwrap().get(key).unwrap();
    let reason = got.get("reason").unwrap();
    let actual = [
        got.get("enabled").unwrap().clone(),
        got.get("variant").unwrap().clone(),
        reason.get("code").unwrap().clone(),
        reason.get("condition_index").unwrap().clone(),
        got.get("metadata").unwrap().get("payload").unwrap().clone(),
    ];
    let wanted = ["enabled", "variant", "reason", "condition_index", "payload"]
        .map(|field| expected.get(field).cloned().unwrap_or_default());
    (actual != wanted).then(|| format!("got {actual:?}, want {wanted:?}"))
}

/// Every case of the shared table: PostHog's answers (from posthog-python where it decides, from
/// the flag service's rules where only the server can), including the reason and payload.
#[test]
fn fixture_cases() {
    let cases = fixture("cases.json");
    let mut failures = Vec::new();
    for case in cases.as_array().unwrap() {
        let name = case.get("name").and_then(|n| n.as_str()).unwrap_or_default();
        let mut flags = vec![case.get("flag").unwrap().clone()];
        flags.extend(
            case.get("other_flags")
                .and_then(|o| o.as_array())
                .into_iter()
                .flatten()
                .cloned(),
        );
        let empty = Value::new_object();
        let document = format!(
            r#"{{"flags":{},"group_type_mapping":{},"cohorts":{}}}"#,
            sonic_rs::to_string(&flags).unwrap(),
            sonic_rs::to_string(case.get("group_type_mapping").unwrap_or(&empty)).unwrap(),
            sonic_rs::to_string(case.get("cohorts").unwrap_or(&empty)).unwrap(),
        );
        let (set, problems) = FlagSet::compile(None, Some(&document));
        if !problems.is_empty() {
            failures.push(format!("{name}: {problems:?}"));
            continue;
        }
        let key = case.get("flag").unwrap().get("key").unwrap().as_str().unwrap();
        if let Some(difference) = differs(&set, key, case.get("context").unwrap(), case.get("expected").unwrap()) {
            failures.push(format!("{name}: {difference}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A Hogflare-format flag and its PostHog-format equivalent answer alike.
#[test]
fn hogflare_format_matches_its_posthog_equivalent() {
    let pairs = fixture("hogflare_format.json");
    let mut failures = Vec::new();
    for pair in pairs.as_array().unwrap() {
        let name = pair.get("name").and_then(|n| n.as_str()).unwrap_or_default();
        let mapping = pair
            .get("group_type_mapping")
            .map_or_else(|| "{}".to_owned(), ToString::to_string);
        let hogflare = format!(
            r#"{{"flags":[{}],"group_type_mapping":{mapping}}}"#,
            pair.get("hogflare").unwrap()
        );
        let posthog = format!(
            r#"{{"flags":[{}],"group_type_mapping":{mapping}}}"#,
            pair.get("posthog").unwrap()
        );
        let (from_hogflare, problems) = FlagSet::compile(Some(&hogflare), None);
        let (from_posthog, more) = FlagSet::compile(None, Some(&posthog));
        if !problems.is_empty() || !more.is_empty() {
            failures.push(format!("{name}: {problems:?} {more:?}"));
            continue;
        }
        let key = pair.get("posthog").unwrap().get("key").unwrap().as_str().unwrap();
        for case in pair.get("contexts").unwrap().as_array().unwrap() {
            let (context, expected) = (case.get("context").unwrap(), case.get("expected").unwrap());
            for (format, set) in [("hogflare", &from_hogflare), ("posthog", &from_posthog)] {
                if let Some(difference) = differs(set, key, context, expected) {
                    failures.push(format!(
                        "{name} ({format}, {}): {difference}",
                        context.get("distinct_id").unwrap()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} answers differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn request_properties_override_the_stored_ones() {
    let definitions = r#"[
        {"key": "pro", "active": true, "filters": {"groups": [{"rollout_percentage": 100,
            "properties": [{"key": "plan", "value": "pro", "operator": "exact", "type": "person"}]}]}},
        {"key": "me", "active": true, "filters": {"groups": [{"rollout_percentage": 100,
            "properties": [{"key": "distinct_id", "value": "u1", "operator": "exact", "type": "person"}]}]}},
        {"key": "big", "active": true, "filters": {"aggregation_group_type_index": 0, "groups": [{"rollout_percentage": 100,
            "properties": [{"key": "size", "value": 10, "operator": "gt", "type": "group", "group_type_index": 0},
                           {"key": "$group_key", "value": "acme", "operator": "exact", "type": "group", "group_type_index": 0}]}]}}
    ]"#;
    let document = format!(r#"{{"flags": {definitions}, "group_type_mapping": {{"0": "company"}}}}"#);
    let (set, problems) = FlagSet::compile(None, Some(&document));
    assert!(problems.is_empty(), "{problems:?}");
    let enabled = |person: &str, stored_groups: &str, group_overrides: &str| -> Vec<bool> {
        let request = Request {
            distinct_id: "u1",
            person_properties: person,
            groups: r#"{"company": "acme"}"#,
            group_properties: group_overrides,
            stored: Some(super::Stored {
                person: Some(r#"{"plan": "free", "name": "Ada"}"#),
                groups: Some(stored_groups),
            }),
            ..Request::default()
        };
        let results = set.evaluate(&request, Utc::now());
        results.iter().map(|(_, result)| result.enabled).collect()
    };
    // Stored properties alone; `distinct_id` is there for the `me` flag.
    assert_eq!(enabled("{}", r#"{"company": {"size": 50}}"#, "{}"), [false, true, true]);
    // The request's person properties and group properties win over the stored ones.
    assert_eq!(
        enabled(
            r#"{"plan": "pro"}"#,
            r#"{"company": {"size": 50}}"#,
            r#"{"company": {"size": 2}}"#
        ),
        [true, true, false]
    );
    // A `distinct_id` the request sends is the one used.
    assert_eq!(
        enabled(r#"{"distinct_id": "other"}"#, "{}", r#"{"company": {"size": 11}}"#),
        [false, false, true]
    );
}

#[test]
fn each_version_gets_its_shape() {
    use super::Shape;
    let definitions = r#"[
        {"key": "on", "active": true, "filters": {"groups": [{"rollout_percentage": 100}],
            "payloads": {"true": "{\"a\":1}"}}},
        {"key": "off", "active": true, "filters": {"groups": [{"rollout_percentage": 0}],
            "payloads": {"true": "2"}}},
        {"key": "multi", "active": true, "filters": {"groups": [{"rollout_percentage": 100}],
            "multivariate": {"variants": [{"key": "b", "rollout_percentage": 100}]}}}
    ]"#;
    let (set, problems) = FlagSet::compile(None, Some(definitions));
    assert!(problems.is_empty(), "{problems:?}");
    let request = Request {
        distinct_id: "u1",
        person_properties: "{}",
        groups: "{}",
        group_properties: "{}",
        ..Request::default()
    };
    let results = set.evaluate(&request, Utc::now());
    let answer =
        |shape| -> Value { sonic_rs::from_str(&set.respond(&results, shape, "rid", 1_700_000_000_000)).unwrap() };

    let v1 = answer(Shape::for_request(true, None));
    assert_eq!(
        sonic_rs::to_string(v1.get("featureFlags").unwrap()).unwrap(),
        r#"["on","multi"]"#
    );
    assert!(v1.get("flags").is_none());
    let v2 = answer(Shape::for_request(true, Some(2)));
    assert_eq!(
        sonic_rs::to_string(v2.get("featureFlags").unwrap()).unwrap(),
        r#"{"on":true,"multi":"b"}"#
    );
    let v3 = answer(Shape::for_request(true, Some(3)));
    assert_eq!(
        sonic_rs::to_string(v3.get("featureFlags").unwrap()).unwrap(),
        r#"{"on":true,"off":false,"multi":"b"}"#
    );
    assert_eq!(
        sonic_rs::to_string(v3.get("featureFlagPayloads").unwrap()).unwrap(),
        r#"{"on":"{\"a\":1}"}"#
    );
    for shape in [
        Shape::for_request(true, Some(4)),
        Shape::for_request(false, Some(1)),
        Shape::for_request(false, None),
        Shape::for_request(false, Some(4)),
        Shape::for_request(false, Some(99)),
    ] {
        let flags = answer(shape);
        assert_eq!(flags.get("flags").unwrap().as_object().unwrap().len(), 3);
        assert_eq!(flags.get("errorsWhileComputingFlags").unwrap().as_bool(), Some(false));
        assert_eq!(flags.get("requestId").unwrap().as_str(), Some("rid"));
        assert_eq!(flags.get("evaluatedAt").unwrap().as_i64(), Some(1_700_000_000_000));
        assert_eq!(
            sonic_rs::to_string(flags.get("featureFlags").unwrap()).unwrap(),
            r#"{"on":true,"off":false,"multi":"b"}"#
        );
    }
    // Only /flags from v4 on carries each record's typed value and configuration format.
    for shape in [Shape::for_request(true, Some(4)), Shape::for_request(false, Some(3))] {
        let flags = answer(shape);
        let on = flags.get("flags").unwrap().get("on").unwrap();
        assert!(on.get("value").is_none(), "{shape:?}");
        assert!(on.get("metadata").unwrap().get("config_version").is_none(), "{shape:?}");
    }
    let typed = answer(Shape::for_request(false, Some(4)));
    let records = typed.get("flags").unwrap();
    for (key, value, payload) in [
        ("on", "true", r#""{\"a\":1}""#),
        ("off", "false", "null"),
        ("multi", r#""b""#, "null"),
    ] {
        let record = records.get(key).unwrap();
        assert_eq!(
            sonic_rs::to_string(record.get("value").unwrap()).unwrap(),
            value,
            "{key}"
        );
        let metadata = record.get("metadata").unwrap();
        assert_eq!(metadata.get("config_version").unwrap().as_i64(), Some(1), "{key}");
        assert_eq!(
            sonic_rs::to_string(metadata.get("payload").unwrap()).unwrap(),
            payload,
            "{key}"
        );
        assert_eq!(
            record.get("enabled").unwrap().as_bool(),
            Some(value != "false"),
            "{key}"
        );
    }
    let nothing: Value = sonic_rs::from_str(&set.respond(&[], Shape::Flags, "rid", 0)).unwrap();
    assert_eq!(sonic_rs::to_string(nothing.get("flags").unwrap()).unwrap(), "{}");
}

#[test]
fn a_cohort_that_contains_itself_is_an_error_not_a_crash() {
    let document = r#"{"flags": [{"id": 1, "key": "f", "active": true, "filters": {"groups": [
        {"properties": [{"key": "id", "type": "cohort", "value": 1}], "rollout_percentage": 100}]}}],
        "cohorts": {"1": {"type": "OR", "values": [{"type": "OR", "values": [{"key": "id", "type": "cohort", "value": 1}]}]}}}"#;
    let (set, problems) = FlagSet::compile(None, Some(document));
    assert!(problems.is_empty(), "{problems:?}");
    let out = evaluate(&set, "u1", "{}");
    let flag = out.get("flags").unwrap().get("f").unwrap();
    assert_eq!(flag.get("enabled").unwrap().as_bool(), Some(false));
    assert_eq!(out.get("errorsWhileComputingFlags").unwrap().as_bool(), Some(true));
}
