//! The rules PostHog's flag service applies beyond one condition's match: dependencies between
//! flags, early-access enrollment, group flags, evaluation environments and regex limits.

use chrono::Utc;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use super::{FlagSet, Request};

fn posthog_set(flags: &str) -> FlagSet {
    let document = format!(r#"{{"flags": {flags}, "group_type_mapping": {{"0": "company"}}}}"#);
    let (set, problems) = FlagSet::compile(None, Some(&document));
    assert!(problems.is_empty(), "{problems:?}");
    set
}

fn answer(set: &FlagSet, key: &str, person: &str, groups: &str) -> (bool, String) {
    let request = Request {
        distinct_id: "user-1",
        person_properties: person,
        groups,
        group_properties: "{}",
        ..Request::default()
    };
    let (enabled, _, code) = flag_answer(set, &request, key);
    (enabled, code)
}

/// `(enabled, variant, reason code)` of one flag of the request's `/flags` answer.
pub(super) fn flag_answer(set: &FlagSet, request: &Request<'_>, key: &str) -> (bool, Option<String>, String) {
    let out: Value = sonic_rs::from_str(&set.evaluate_json(request, Utc::now())).unwrap();
    let flag = out.get("flags").unwrap().get(key).unwrap();
    let code = flag.get("reason").unwrap().get("code").unwrap().as_str().unwrap();
    (
        flag.get("enabled").unwrap().as_bool().unwrap(),
        flag.get("variant").unwrap().as_str().map(str::to_owned),
        code.to_owned(),
    )
}

fn flag(key: &str, groups: &str) -> String {
    format!(r#"{{"key": "{key}", "active": true, "filters": {{"groups": {groups}}}}}"#)
}

fn depends_on(other: &str) -> String {
    format!(
        r#"{{"properties": [{{"key": "{other}", "type": "flag", "operator": "flag_evaluates_to", "value": true}}], "rollout_percentage": 100}}"#
    )
}

const EVERYONE: &str = r#"{"properties": [], "rollout_percentage": 100}"#;

#[test]
fn a_missing_or_circular_dependency_decides_the_flag_whatever_its_other_conditions() {
    let ghost = flag("needs-ghost", &format!("[{}, {EVERYONE}]", depends_on("ghost")));
    let set = posthog_set(&format!("[{ghost}]"));
    assert_eq!(
        answer(&set, "needs-ghost", "{}", "{}"),
        (false, "missing_dependency".into())
    );

    // A cycle is one in either order of the flags file, and so is a flag that depends on it.
    let c1 = flag("c1", &format!("[{}, {EVERYONE}]", depends_on("c2")));
    let c2 = flag("c2", &format!("[{}]", depends_on("c1")));
    let outside = flag("outside", &format!("[{}]", depends_on("c1")));
    for order in [format!("[{c1}, {c2}, {outside}]"), format!("[{outside}, {c2}, {c1}]")] {
        let set = posthog_set(&order);
        for key in ["c1", "c2", "outside"] {
            assert_eq!(
                answer(&set, key, "{}", "{}"),
                (false, "missing_dependency".into()),
                "{key}"
            );
        }
    }
}

#[test]
fn early_access_is_opted_into_by_true_alone_and_legacy_super_groups_do_not_decide_it() {
    let beta = r#"{"key": "beta", "active": true, "filters": {"feature_enrollment": true,
        "groups": [{"properties": [], "rollout_percentage": 0}],
        "super_groups": [{"properties": [{"key": "vip", "type": "person", "operator": "exact", "value": ["yes"]}],
                          "rollout_percentage": 100}]}}"#;
    let set = posthog_set(&format!("[{beta}]"));
    let enrolled = |value: &str| {
        answer(
            &set,
            "beta",
            &format!(r#"{{"$feature_enrollment/beta": {value}}}"#),
            "{}",
        )
    };
    assert_eq!(enrolled("true"), (true, "super_condition_value".into()));
    assert_eq!(enrolled(r#""true""#), (true, "super_condition_value".into()));
    assert_eq!(enrolled(r#""True""#), (false, "super_condition_value".into()));
    assert_eq!(
        answer(&set, "beta", r#"{"vip": "yes"}"#, "{}"),
        (false, "out_of_rollout_bound".into())
    );
}

#[test]
fn a_group_is_named_by_a_non_empty_string_or_a_number() {
    let company = r#"{"key": "co", "active": true, "filters": {"aggregation_group_type_index": 0,
        "groups": [{"properties": [], "rollout_percentage": 100}]}}"#;
    let set = posthog_set(&format!("[{company}]"));
    assert_eq!(
        answer(&set, "co", "{}", r#"{"company": "acme"}"#),
        (true, "condition_match".into())
    );
    assert_eq!(
        answer(&set, "co", "{}", r#"{"company": 42}"#),
        (true, "condition_match".into())
    );
    for key in [r#""""#, "true", "null", "{}"] {
        let groups = format!(r#"{{"company": {key}}}"#);
        assert_eq!(
            answer(&set, "co", "{}", &groups),
            (false, "no_group_type".into()),
            "{key}"
        );
    }
}

#[test]
fn a_dependency_without_flag_evaluates_to_matches_nothing() {
    let base = flag("base", &format!("[{EVERYONE}]"));
    let malformed = r#"{"properties": [{"key": "base", "type": "flag", "operator": "exact", "value": true}], "rollout_percentage": 100}"#;
    let child = flag("child", &format!("[{malformed}]"));
    let set = posthog_set(&format!("[{base}, {child}]"));
    assert_eq!(answer(&set, "base", "{}", "{}"), (true, "condition_match".into()));
    assert_eq!(answer(&set, "child", "{}", "{}"), (false, "no_condition_match".into()));
}

/// The answer for user-1, with no properties, asking for the flags of these contexts.
fn in_contexts(set: &FlagSet, contexts: &[String]) -> Value {
    let request = Request {
        distinct_id: "user-1",
        person_properties: "{}",
        groups: "{}",
        group_properties: "{}",
        environments: Some(contexts),
        ..Request::default()
    };
    sonic_rs::from_str(&set.evaluate_json(&request, Utc::now())).unwrap()
}

#[test]
fn a_flag_the_environments_leave_out_is_off_for_its_dependents() {
    let mobile = r#"{"key": "mobile-only", "active": true, "evaluation_tags": ["mobile"],
        "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]}}"#;
    let when = |value: bool| {
        format!(
            r#"{{"properties": [{{"key": "mobile-only", "type": "flag", "operator": "flag_evaluates_to", "value": {value}}}], "rollout_percentage": 100}}"#
        )
    };
    let needs_on = flag("needs-on", &format!("[{}]", when(true)));
    let needs_off = flag("needs-off", &format!("[{}]", when(false)));
    let set = posthog_set(&format!("[{mobile}, {needs_on}, {needs_off}]"));
    let evaluate = |environments: &[String]| in_contexts(&set, environments);
    let enabled = |out: &Value, key: &str| {
        out.get("flags")
            .unwrap()
            .get(key)
            .map(|f| f.get("enabled").unwrap().as_bool().unwrap())
    };
    let web = evaluate(&["web".to_owned()]);
    assert_eq!(enabled(&web, "mobile-only"), None);
    assert_eq!(enabled(&web, "needs-on"), Some(false));
    assert_eq!(enabled(&web, "needs-off"), Some(true));
    let mobile = evaluate(&["mobile".to_owned()]);
    assert_eq!(enabled(&mobile, "mobile-only"), Some(true));
    assert_eq!(enabled(&mobile, "needs-on"), Some(true));
    assert_eq!(enabled(&mobile, "needs-off"), Some(false));
}

#[test]
fn a_condition_with_a_null_aggregation_targets_the_person_in_a_group_flag() {
    let mixed = |aggregation: &str| {
        format!(
            r#"{{"key": "mixed", "active": true, "filters": {{"aggregation_group_type_index": 0, "groups": [
                {{"properties": [{{"key": "plan", "type": "person", "operator": "exact", "value": "pro"}}],
                  "rollout_percentage": 100{aggregation}}}]}}}}"#
        )
    };
    let person = r#"{"plan": "pro"}"#;
    let set = posthog_set(&format!("[{}]", mixed(r#", "aggregation_group_type_index": null"#)));
    assert_eq!(answer(&set, "mixed", person, "{}"), (true, "condition_match".into()));
    let set = posthog_set(&format!("[{}]", mixed("")));
    assert_eq!(answer(&set, "mixed", person, "{}"), (false, "no_group_type".into()));
}

#[test]
fn a_pattern_that_gives_up_is_an_error_in_the_answer() {
    let slow = r#"{"key": "slow", "active": true, "filters": {"groups": [{"properties": [
        {"key": "name", "type": "person", "operator": "regex", "value": "^(\\w+\\s?)*(?<=x)$"}],
        "rollout_percentage": 100}]}}"#;
    let set = posthog_set(&format!("[{slow}]"));
    let person = format!(r#"{{"name": "{}!"}}"#, "a".repeat(24));
    let request = Request {
        distinct_id: "user-1",
        person_properties: &person,
        groups: "{}",
        group_properties: "{}",
        ..Request::default()
    };
    let out: Value = sonic_rs::from_str(&set.evaluate_json(&request, Utc::now())).unwrap();
    assert_eq!(
        out.get("errorsWhileComputingFlags").and_then(JsonValueTrait::as_bool),
        Some(true)
    );
    assert!(!answer(&set, "slow", &person, "{}").0);
}

#[test]
fn evaluation_contexts_and_runtime_as_posthog_names_them_now() {
    let definitions = r#"{"flags": [
        {"key": "web-only", "active": true, "team_id": 7, "evaluation_runtime": "client",
         "evaluation_contexts": ["web"], "evaluation_tags": ["mobile"],
         "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]}}]}"#;
    let (set, problems) = FlagSet::compile(None, Some(definitions));
    assert!(problems.is_empty(), "{problems:?}");
    let flags = |contexts: &[String]| in_contexts(&set, contexts).get("flags").unwrap().clone();
    // The newer name wins over the legacy one.
    assert!(flags(&["web".to_owned()]).get("web-only").is_some());
    assert!(flags(&["mobile".to_owned()]).get("web-only").is_none());
    // The server SDKs read the runtime from the definitions they evaluate locally.
    let served: Value = sonic_rs::from_str(&set.definitions_json()).unwrap();
    let flag = served.get("flags").unwrap().get(0).unwrap();
    assert_eq!(
        flag.get("evaluation_runtime").and_then(JsonValueTrait::as_str),
        Some("client")
    );
    assert_eq!(flag.get("team_id").and_then(JsonValueTrait::as_i64), Some(7));
    let contexts = flag.get("evaluation_contexts").unwrap().as_array().unwrap();
    assert_eq!(contexts.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>(), ["web"]);
}
