use super::*;

fn update(set: &[(&str, &str)], set_once: &[(&str, &str)], unset: &[&str]) -> PropertyUpdate {
    PropertyUpdate::of(set, set_once, unset)
}

fn person(set: &[(&str, &str)]) -> Person {
    Person::new(1, Uuid::nil(), 0, "d", &update(set, &[], &[]))
}

#[test]
fn set_once_fills_only_absent_keys_and_set_overwrites() {
    let mut p = person(&[("email", r#""a@x""#)]);
    assert!(p
        .apply(
            "e",
            &update(
                &[("plan", r#""pro""#)],
                &[("email", r#""b@x""#), ("source", r#""ad""#)],
                &[]
            )
        )
        .written());
    assert_eq!(p.properties_json(), r#"{"email":"a@x","source":"ad","plan":"pro"}"#);
    assert_eq!(p.set_once_json(), r#"{"source":"ad"}"#);
    assert_eq!(p.version, 1);
}

#[test]
fn set_wins_over_set_once_of_the_same_key() {
    let mut p = person(&[]);
    p.apply("e", &update(&[("plan", r#""pro""#)], &[("plan", r#""free""#)], &[]));
    assert_eq!(p.properties_json(), r#"{"plan":"pro"}"#);
}

#[test]
fn unchanged_values_are_no_change() {
    let mut p = person(&[("plan", r#""pro""#)]);
    assert!(!p
        .apply("e", &update(&[("plan", r#""pro""#)], &[], &["missing"]))
        .written());
    assert_eq!(p.version, 0);
}

#[test]
fn unset_removes_what_the_person_had_before_the_event() {
    // As PostHog decides an event's `$unset` against the person it read: a key the same event
    // adds lands, and one it overwrites or already had goes.
    let mut p = person(&[("seed", "1"), ("old", "2"), ("kept", "3")]);
    let both = update(
        &[("a", "1"), ("old", "5")],
        &[("b", "2"), ("kept", "4")],
        &["a", "b", "old", "kept"],
    );
    assert!(p.apply("e", &both).written());
    assert_eq!(p.properties_json(), r#"{"seed":1,"b":2,"a":1}"#);
}

#[test]
fn unset_removes_present_keys() {
    let mut p = person(&[("a", "1"), ("b", "2")]);
    assert!(p.apply("e", &update(&[], &[], &["a"])).written());
    assert_eq!(p.properties_json(), r#"{"b":2}"#);
}

#[test]
fn fast_changing_keys_alone_do_not_write() {
    let mut p = person(&[("$current_url", r#""/a""#), ("plan", r#""free""#)]);
    assert!(!p
        .apply("$pageview", &update(&[("$current_url", r#""/b""#)], &[], &[]))
        .written());
    assert_eq!(p.get("$current_url"), Some((r#""/a""#, false)));
    // The event's row shows them, laid over the person.
    assert_eq!(
        p.apply("$pageview", &update(&[("$current_url", r#""/b""#)], &[], &[])),
        PersonChange::Shown(r#"{"$current_url":"/b"}"#.into())
    );
    // ... but ride along with a real change, and are written when the event forces it.
    assert!(p
        .apply(
            "$pageview",
            &update(&[("$current_url", r#""/b""#), ("plan", r#""pro""#)], &[], &[])
        )
        .written());
    assert_eq!(p.get("$current_url"), Some((r#""/b""#, false)));
    assert!(p
        .apply("$set", &update(&[("$current_url", r#""/c""#)], &[], &[]))
        .written());
    // A new fast-changing key is written; one only offered through $set_once is not on its own.
    assert!(p
        .apply("e", &update(&[("$browser", r#""Chrome""#)], &[], &[]))
        .written());
    assert!(!p.apply("e", &update(&[], &[("$os", r#""Linux""#)], &[])).written());
}

#[test]
fn some_events_never_update() {
    let mut p = person(&[]);
    assert!(!p.apply("$exception", &update(&[("a", "1")], &[], &[])).written());
}

#[test]
fn absorbing_keeps_this_persons_values_and_the_older_creation() {
    let mut keep = Person::new(2, Uuid::nil(), 200, "user", &update(&[("plan", r#""pro""#)], &[], &[]));
    let gone = Person::new(
        1,
        Uuid::nil(),
        100,
        "anon",
        &update(&[("plan", r#""free""#), ("ref", r#""ad""#)], &[], &[]),
    );
    keep.absorb(&gone);
    assert_eq!(keep.properties_json(), r#"{"plan":"pro","ref":"ad"}"#);
    assert_eq!((keep.created_at, keep.is_identified), (100, true));
    assert_eq!(keep.distinct_ids, vec!["user", "anon"]);
}

#[test]
fn a_key_set_and_unset_by_one_event_is_gone_from_the_person_and_shown_on_its_row() {
    let mut p = person(&[("plan", r#""free""#), ("a", "1")]);
    let change = p.apply("e", &update(&[("plan", r#""pro""#), ("b", "2")], &[], &["plan"]));
    assert_eq!(change, PersonChange::WrittenShowing(r#"{"plan":"pro"}"#.to_owned()));
    assert_eq!(p.properties_json(), r#"{"a":1,"b":2}"#);
    // A key the person did not have lands, so nothing needs showing.
    let change = p.apply("e", &update(&[("new", "3")], &[], &["new"]));
    assert_eq!(change, PersonChange::Written);
    assert!(p.properties_json().contains(r#""new":3"#));
}
