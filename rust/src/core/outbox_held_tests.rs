//! Entries that take their person from an earlier entry of their commit: written for a person
//! who has not changed since, read back with the person filled in wherever the read begins,
//! and never trimmed away while an entry that points to them may still be read.

use super::person_store_tests::{capture, Harness};
use super::row::{person_held_at, PersonSnapshot};
use super::store::Store;

/// Each entry's first position and, for one that takes its person from another, that one's.
fn layout(store: &Store) -> Vec<(u64, Option<u64>)> {
    store
        .with_outbox(0, usize::MAX, u64::MAX, |read| {
            Ok(read
                .entries
                .iter()
                .map(|(last, bytes)| (last - 1, person_held_at(bytes)))
                .collect())
        })
        .unwrap()
}

fn plans(snapshots: &[PersonSnapshot]) -> Vec<Option<String>> {
    snapshots
        .iter()
        .map(|s| s.person.get("plan").map(|(value, _)| value.to_owned()))
        .collect()
}

fn pageviews(h: &mut Harness, distinct_id: &str, count: usize) {
    let events: Vec<_> = (0..count)
        .map(|_| capture(distinct_id, serde_json::json!({"$current_url": "/"})))
        .collect();
    h.send(serde_json::Value::Array(events));
}

#[test]
fn a_person_who_does_not_change_is_held_once_per_commit() {
    let mut h = Harness::new();
    let set = |plan: &str| capture("user", serde_json::json!({"$set": {"plan": plan}}));
    let none = || capture("user", serde_json::json!({}));
    let (events, snapshots, _) = h.send(serde_json::json!([set("pro"), none(), none(), set("team"), none()]));
    assert_eq!(
        layout(&h.store),
        [(1, None), (3, Some(1)), (5, Some(1)), (7, None), (9, Some(7))]
    );
    // Every row is what it would be with the person in each entry.
    let shown: Vec<_> = events.iter().map(|e| e.person_properties.clone().unwrap()).collect();
    assert!(shown[..3].iter().all(|json| json.contains(r#""plan":"pro""#)));
    assert!(shown[3..].iter().all(|json| json.contains(r#""plan":"team""#)));
    let pro = Some("\"pro\"".to_owned());
    let team = Some("\"team\"".to_owned());
    assert_eq!(plans(&snapshots), [pro.clone(), pro.clone(), pro, team.clone(), team]);
    let sources: Vec<_> = snapshots.iter().map(|s| s.source_event_uuid).collect();
    assert_eq!(sources, events.iter().map(|e| e.uuid).collect::<Vec<_>>());
    assert!(snapshots.windows(2).all(|pair| pair[0].uuid != pair[1].uuid));

    // The next commit holds the person again in its first entry.
    pageviews(&mut h, "user", 2);
    assert_eq!(layout(&h.store)[5..], [(11, None), (13, Some(11))]);
}

#[test]
fn a_read_that_begins_inside_a_commit_finds_the_person_before_it() {
    let mut h = Harness::new();
    pageviews(&mut h, "user", 4);
    for after in [2, 4, 6] {
        let chunk = h.store.read_outbox(after, usize::MAX, u64::MAX).unwrap();
        assert_eq!(chunk.records.len() as u64, (8 - after) / 2);
        for (_, record) in chunk.records {
            let (Some(event), Some(snapshot)) = record.rows() else {
                panic!("an event and its person")
            };
            assert_eq!(snapshot.person.distinct_ids, ["user"]);
            assert_eq!(event.person_properties, Some(snapshot.person.properties_json()));
        }
    }
}

#[test]
fn entries_of_people_in_turn_each_find_their_own_person() {
    let mut h = Harness::new();
    let set = |user: &str, plan: &str| capture(user, serde_json::json!({"$set": {"plan": plan}}));
    let none = |user: &str| capture(user, serde_json::json!({}));
    let (events, snapshots, _) = h.send(serde_json::json!([
        set("a", "pro"),
        set("b", "team"),
        none("a"),
        none("b"),
        none("a"),
        none("b")
    ]));
    assert_eq!(
        layout(&h.store),
        [
            (1, None),
            (3, None),
            (5, Some(1)),
            (7, Some(3)),
            (9, Some(1)),
            (11, Some(3))
        ]
    );
    let pro = Some("\"pro\"".to_owned());
    let team = Some("\"team\"".to_owned());
    let expected = [pro.clone(), team.clone(), pro.clone(), team.clone(), pro, team];
    assert_eq!(plans(&snapshots), expected);
    for (event, snapshot) in events.iter().zip(&snapshots) {
        assert_eq!(snapshot.person.distinct_ids, [event.distinct_id.as_str()]);
        assert_eq!(event.person_properties, Some(snapshot.person.properties_json()));
    }
    // Read from inside the commit: the persons are found before the read.
    for after in [4, 6, 8] {
        let chunk = h.store.read_outbox(after, usize::MAX, u64::MAX).unwrap();
        let users: Vec<_> = chunk.records.into_iter().map(|(_, record)| record.rows()).collect();
        assert_eq!(users.len() as u64, (12 - after) / 2);
        for (event, snapshot) in users {
            let (event, snapshot) = (event.unwrap(), snapshot.unwrap());
            assert_eq!(snapshot.person.distinct_ids, [event.distinct_id.as_str()]);
            let plan = if event.distinct_id == "a" { "pro" } else { "team" };
            assert!(event
                .person_properties
                .unwrap()
                .contains(&format!(r#""plan":"{plan}""#)));
        }
    }
}

#[test]
fn the_outbox_keeps_a_held_person_while_an_entry_pointing_to_it_may_be_read() {
    let mut h = Harness::new();
    pageviews(&mut h, "user", 4);
    // A sink at position 4 has the first two entries; the other two point to the first.
    assert_eq!(h.store.trim_outbox(4, 100).unwrap(), 0);
    assert_eq!(h.store.first_position().unwrap(), 1);
    assert_eq!(h.store.read_outbox(4, usize::MAX, u64::MAX).unwrap().records.len(), 2);
    // Once every sink has the whole commit, it goes.
    assert_eq!(h.store.trim_outbox(8, 100).unwrap(), 8);
    assert_eq!(h.store.first_position().unwrap(), 9);
}

#[test]
fn a_trim_that_reaches_its_limit_inside_a_commit_goes_on_to_its_end() {
    let mut h = Harness::new();
    pageviews(&mut h, "user", 3);
    pageviews(&mut h, "other", 3);
    // One entry per call, but the first commit's entries all go together, then the second's.
    assert_eq!(h.store.trim_outbox(12, 1).unwrap(), 6);
    assert_eq!(h.store.first_position().unwrap(), 7);
    assert_eq!(h.store.read_outbox(6, usize::MAX, u64::MAX).unwrap().records.len(), 3);
    assert_eq!(h.store.trim_outbox(12, 1).unwrap(), 6);
    assert_eq!(h.store.outbox_state().unwrap().rows, 0);
}
