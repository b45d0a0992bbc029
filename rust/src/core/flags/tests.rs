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
