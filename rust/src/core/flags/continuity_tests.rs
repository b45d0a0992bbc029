//! Experience continuity: the hash key the store keeps for a flag buckets it, as the request's
//! `$anon_distinct_id` does, except for a holdout; and which flags ask the store for theirs.

use std::collections::HashMap;

use super::rules_tests::flag_answer;
use super::{FlagSet, Request};

const EXPERIMENT: &str = r#"{"key": "exp", "active": true, "ensure_experience_continuity": true, "filters": {
    "groups": [{"properties": [], "rollout_percentage": 100}],
    "multivariate": {"variants": [{"key": "a", "rollout_percentage": 50}, {"key": "b", "rollout_percentage": 50}]}}}"#;
const HELD_OUT: &str = r#"{"key": "held", "active": true, "ensure_experience_continuity": true, "filters": {
    "groups": [{"properties": [], "rollout_percentage": 100}], "holdout": {"id": 7, "exclusion_percentage": 50}}}"#;
const PLAIN: &str =
    r#"{"key": "plain", "active": true, "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]}}"#;

fn set(flags: &[&str]) -> FlagSet {
    let (set, problems) = FlagSet::compile(None, Some(&format!(r#"{{"flags": [{}]}}"#, flags.join(","))));
    assert!(problems.is_empty(), "{problems:?}");
    set
}

/// `(variant, reason code)` of a flag for `user`, with a stored hash key and a request's anonymous id.
fn answer(set: &FlagSet, key: &str, stored: Option<&str>, anon: Option<&str>) -> (Option<String>, String) {
    let overrides: HashMap<String, String> = stored.map(|h| (key.to_owned(), h.to_owned())).into_iter().collect();
    let request = Request {
        distinct_id: "user",
        person_properties: "{}",
        groups: "{}",
        group_properties: "{}",
        anon_distinct_id: anon,
        hash_key_overrides: Some(&overrides),
        ..Request::default()
    };
    let (_, variant, code) = flag_answer(set, &request, key);
    (variant, code)
}

#[test]
fn a_stored_hash_key_buckets_the_flag_as_the_anonymous_id_did() {
    let set = set(&[EXPERIMENT]);
    let own = answer(&set, "exp", None, None).0;
    let anon = (0..100)
        .map(|n| format!("anon-{n}"))
        .find(|anon| answer(&set, "exp", None, Some(anon)).0 != own)
        .unwrap();
    let seen_anonymously = answer(&set, "exp", None, Some(&anon)).0;
    assert_eq!(answer(&set, "exp", Some(&anon), None).0, seen_anonymously);
    // The stored key wins over a later anonymous id.
    assert_eq!(
        answer(&set, "exp", Some(&anon), Some("someone-else")).0,
        seen_anonymously
    );
}

#[test]
fn a_holdout_is_decided_by_the_request_not_the_stored_hash_key() {
    let set = set(&[HELD_OUT]);
    assert_eq!(answer(&set, "held", None, None).1, "condition_match");
    let anon = (0..100)
        .map(|n| format!("anon-{n}"))
        .find(|anon| answer(&set, "held", None, Some(anon)).1 == "holdout_condition_value")
        .unwrap();
    assert_eq!(answer(&set, "held", Some(&anon), None).1, "condition_match");
}

#[test]
fn only_a_request_that_evaluates_a_continuity_flag_asks_for_hash_keys() {
    let set = set(&[EXPERIMENT, HELD_OUT, PLAIN]);
    let keys = |flag_keys: Option<&[String]>| {
        let request = Request {
            distinct_id: "user",
            flag_keys,
            ..Request::default()
        };
        set.continuity_keys(&request)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(None), ["exp", "held"]);
    assert_eq!(keys(Some(&["exp".to_owned()])), ["exp", "held"]);
    assert!(keys(Some(&["plain".to_owned()])).is_empty());
    let inactive = EXPERIMENT.replace(r#""active": true"#, r#""active": false"#);
    let without = FlagSet::compile(None, Some(&format!(r#"{{"flags": [{inactive}, {PLAIN}]}}"#))).0;
    assert!(without.continuity_keys(&Request::default()).is_empty());
}
