//! Experience continuity's hash keys in the store: remembered for the persons of a `/flags`
//! request that names its anonymous id, read back without it, and carried through a merge.

use super::person_store_tests::{capture, identify, Harness, TOKEN};
use super::store::ContinuityIds;

const FLAGS: &[&str] = &["checkout", "banner"];

/// A `/flags` request's continuity, as the server handles it: read, then remember the
/// anonymous id when told to; the hash keys as a later request finds them.
fn ask(h: &Harness, distinct_id: &str, anon: Option<&str>, flags: &[&str]) -> Vec<(String, String)> {
    let ids = ContinuityIds {
        token: TOKEN,
        distinct_id,
        anon_distinct_id: anon,
    };
    if h.store.hash_key_overrides(&ids, flags).unwrap().remember {
        h.store.remember_hash_keys(&ids, flags).unwrap();
    }
    let found = h.store.hash_key_overrides(&ids, flags).unwrap();
    assert!(!found.remember);
    let mut pairs: Vec<_> = found.overrides.into_iter().collect();
    pairs.sort();
    pairs
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(f, h)| ((*f).to_owned(), (*h).to_owned())).collect()
}

fn with_persons(distinct_ids: &[&str]) -> Harness {
    let mut h = Harness::new();
    let events: Vec<_> = distinct_ids
        .iter()
        .map(|id| capture(id, serde_json::json!({})))
        .collect();
    h.send(serde_json::Value::Array(events));
    h
}

#[test]
fn the_anonymous_id_is_remembered_for_an_existing_person_and_read_without_it() {
    let h = with_persons(&["user"]);
    assert!(ask(&h, "user", None, FLAGS).is_empty());
    let ids = ContinuityIds {
        token: TOKEN,
        distinct_id: "user",
        anon_distinct_id: Some("anon-1"),
    };
    // The answer does not wait for the write: until it is done the request's id buckets alike.
    let before = h.store.hash_key_overrides(&ids, FLAGS).unwrap();
    assert!(before.remember && before.overrides.is_empty());
    let expected = pairs(&[("banner", "anon-1"), ("checkout", "anon-1")]);
    assert_eq!(ask(&h, "user", Some("anon-1"), FLAGS), expected);
    // posthog-js names the anonymous id once; later requests find it stored.
    assert_eq!(ask(&h, "user", None, FLAGS), expected);
    // The first hash key stays: a later anonymous id changes nothing.
    assert_eq!(ask(&h, "user", Some("anon-2"), FLAGS), expected);
}

#[test]
fn nothing_is_remembered_without_a_person_a_project_or_a_usable_anonymous_id() {
    let h = with_persons(&["user"]);
    let unknown = ContinuityIds {
        token: "phc_unknown",
        distinct_id: "user",
        anon_distinct_id: Some("anon"),
    };
    let found = h.store.hash_key_overrides(&unknown, FLAGS).unwrap();
    assert!(!found.remember && found.overrides.is_empty());
    assert!(ask(&h, "nobody", Some("anon"), FLAGS).is_empty());
    assert!(ask(&h, "nobody", None, FLAGS).is_empty());
    // PostHog keeps a hash key of at most 400 characters, and an empty one buckets nobody.
    assert!(ask(&h, "user", Some(""), FLAGS).is_empty());
    assert!(ask(&h, "user", Some(&"a".repeat(401)), FLAGS).is_empty());
    assert_eq!(ask(&h, "user", Some(&"é".repeat(400)), &["checkout"]).len(), 1);
}

#[test]
fn a_flag_added_later_gets_the_anonymous_id_of_the_request_that_first_names_one() {
    let h = with_persons(&["user"]);
    ask(&h, "user", Some("anon-1"), &["checkout"]);
    assert_eq!(
        ask(&h, "user", Some("anon-2"), FLAGS),
        pairs(&[("banner", "anon-2"), ("checkout", "anon-1")])
    );
}

#[test]
fn a_write_decided_before_another_request_remembered_writes_nothing_more() {
    let h = with_persons(&["user"]);
    let ids = |anon| ContinuityIds {
        token: TOKEN,
        distinct_id: "user",
        anon_distinct_id: Some(anon),
    };
    assert!(h.store.hash_key_overrides(&ids("anon-1"), FLAGS).unwrap().remember);
    assert!(h.store.hash_key_overrides(&ids("anon-2"), FLAGS).unwrap().remember);
    h.store.remember_hash_keys(&ids("anon-2"), FLAGS).unwrap();
    h.store.remember_hash_keys(&ids("anon-1"), FLAGS).unwrap();
    assert_eq!(
        ask(&h, "user", None, FLAGS),
        pairs(&[("banner", "anon-2"), ("checkout", "anon-2")])
    );
}

#[test]
fn the_requests_own_person_wins_over_the_anonymous_ids() {
    let h = with_persons(&["user", "anon"]);
    ask(&h, "user", Some("from-user"), &["checkout"]);
    ask(&h, "anon", Some("from-anon"), FLAGS);
    // Both persons had one for checkout: nothing new is written, the user's counts.
    assert_eq!(
        ask(&h, "user", Some("anon"), FLAGS),
        pairs(&[("banner", "from-anon"), ("checkout", "from-user")])
    );
}

#[test]
fn a_merge_moves_the_hash_keys_to_the_survivor_whose_own_win() {
    let mut h = with_persons(&["user", "anon"]);
    ask(&h, "user", Some("from-user"), &["checkout"]);
    ask(&h, "anon", Some("from-anon"), FLAGS);
    h.send(serde_json::json!([identify("user", "anon")]));
    assert_eq!(h.person("anon").unwrap().id, h.person("user").unwrap().id);
    let expected = pairs(&[("banner", "from-anon"), ("checkout", "from-user")]);
    assert_eq!(ask(&h, "user", None, FLAGS), expected);
    assert_eq!(ask(&h, "anon", None, FLAGS), expected);
}

#[test]
fn merges_in_a_chain_in_one_commit_end_with_the_last_survivor() {
    let mut h = with_persons(&["a", "b", "c"]);
    ask(&h, "a", Some("from-a"), &["banner"]);
    ask(&h, "b", Some("from-b"), &["checkout"]);
    let merge = |into: &str, other: &str| serde_json::json!({"event": "$merge_dangerously", "distinct_id": into, "properties": {"alias": other}});
    h.send(serde_json::json!([merge("b", "a"), merge("c", "b")]));
    assert_eq!(
        ask(&h, "c", None, FLAGS),
        pairs(&[("banner", "from-a"), ("checkout", "from-b")])
    );
}

#[test]
fn a_flag_key_longer_than_an_lmdb_key_is_kept_too() {
    let h = with_persons(&["user"]);
    let long = "k".repeat(600);
    let expected = vec![(long.clone(), "anon".to_owned())];
    assert_eq!(ask(&h, "user", Some("anon"), &[long.as_str()]), expected);
    assert_eq!(ask(&h, "user", None, &[long.as_str()]), expected);
}
