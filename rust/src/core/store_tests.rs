//! The store's own tests: deduplication, the outbox (order, trimming, its high-water mark), expiry
//! of seen uuids, monitoring counts, the format check and sink cursors.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::*;
use crate::core::decode::DecodedRequest;
use crate::core::event::NormalizedEvent;
use crate::core::person_event::PersonMode;
use crate::core::timestamp;

pub(crate) fn event(uuid: Uuid) -> NormalizedEvent {
    // The outbox tests count event rows only: no person snapshots.
    NormalizedEvent::without_person(uuid, "e", "d", Utc::now(), "{}".into())
}

pub(crate) fn batch(token: &str, uuids: &[Uuid]) -> DecodedRequest {
    DecodedRequest {
        token: token.into(),
        team_id: None,
        created_at: Utc::now(),
        events: uuids.iter().copied().map(event).collect(),
        dropped: BTreeMap::new(),
        warnings: BTreeMap::new(),
        filtered: 0,
        results: None,
        source: crate::core::row::SOURCE_POSTHOG,
    }
}

fn options() -> CommitOptions {
    CommitOptions {
        dedupe_window_days: 7,
        max_outbox_bytes: u64::MAX,
        now: Utc::now(),
    }
}

fn small() -> StoreConfig {
    StoreConfig {
        map_size: 64 << 20,
        max_readers: 16,
        ..StoreConfig::default()
    }
}

#[test]
fn duplicates_are_dropped_per_project() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &small()).unwrap();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let out = store
        .commit(vec![batch("t1", &[a, b, a]), batch("t2", &[a])], options())
        .unwrap();
    assert_eq!(
        out,
        vec![
            CommitOutcome {
                stored: 2,
                duplicates: 1,
                ..CommitOutcome::default()
            },
            CommitOutcome {
                stored: 1,
                duplicates: 0,
                ..CommitOutcome::default()
            }
        ]
    );
    let again = store.commit(vec![batch("t1", &[a, b])], options()).unwrap();
    assert_eq!(
        again[0],
        CommitOutcome {
            stored: 0,
            duplicates: 2,
            ..CommitOutcome::default()
        }
    );
    assert_eq!(store.outbox_state().unwrap().rows, 3);
}

#[test]
fn outbox_reads_in_order_and_trims() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &small()).unwrap();
    let uuids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    store.commit(vec![batch("t", &uuids)], options()).unwrap();
    let chunk = store.read_outbox(0, 3, u64::MAX).unwrap();
    assert_eq!(
        chunk.records.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(chunk.last_seq, 3);
    assert_eq!(store.trim_outbox(3, 2).unwrap(), 2);
    assert_eq!(store.trim_outbox(3, 100).unwrap(), 1);
    let state = store.outbox_state().unwrap();
    assert_eq!((state.rows, state.next_seq), (2, 6));
    let rest = store.read_outbox(3, 10, u64::MAX).unwrap();
    assert_eq!(rest.records.len(), 2);
    let OutboxRecord::Event(row) = &rest.records[0].1 else {
        panic!("an event row")
    };
    assert_eq!(row.uuid, uuids[3]);
}

#[test]
fn a_sink_gets_no_row_before_the_store_has_flushed_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &small()).unwrap();
    // Nothing to hand over: no flush.
    let flushed = store.syncs.load(Ordering::Relaxed);
    store
        .with_outbox(0, 10, u64::MAX, |read| Ok(read.entries.len()))
        .unwrap();
    assert_eq!(store.syncs.load(Ordering::Relaxed), flushed);
    // A commit whose meta page waits for the next flush, as the commit thread leaves it.
    store
        .commit_unsynced(|| vec![batch("t", &[Uuid::now_v7()])], options())
        .unwrap();
    let flushed = store.syncs.load(Ordering::Relaxed);
    let handed = store
        .with_outbox(0, 10, u64::MAX, |read| {
            Ok((read.entries.len(), store.syncs.load(Ordering::Relaxed)))
        })
        .unwrap();
    assert_eq!(handed, (1, flushed + 1), "the row reached the sink before the flush");
}

#[test]
fn full_outbox_refuses_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &small()).unwrap();
    let tight = CommitOptions {
        max_outbox_bytes: 0,
        ..options()
    };
    store.commit(vec![batch("t", &[Uuid::now_v7()])], tight).unwrap();
    assert!(matches!(
        store.commit(vec![batch("t", &[Uuid::now_v7()])], tight),
        Err(CoreError::OutboxFull { .. })
    ));
}

#[test]
fn seen_uuids_expire_after_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &small()).unwrap();
    let uuid = Uuid::now_v7();
    let old = CommitOptions {
        now: Utc::now() - chrono::TimeDelta::days(10),
        ..options()
    };
    store.commit(vec![batch("t", &[uuid])], old).unwrap();
    // Past the window the uuid no longer counts as seen, even before expiry removes it.
    assert_eq!(store.commit(vec![batch("t", &[uuid])], options()).unwrap()[0].stored, 1);
    // Expiring the old sighting keeps the new one.
    assert_eq!(store.expire_seen(Utc::now(), 7, 100).unwrap(), 1);
    assert_eq!(
        store.commit(vec![batch("t", &[uuid])], options()).unwrap()[0].duplicates,
        1
    );
    assert_eq!(
        store
            .expire_seen(Utc::now() + chrono::TimeDelta::days(10), 7, 100)
            .unwrap(),
        1
    );
    assert_eq!(store.commit(vec![batch("t", &[uuid])], options()).unwrap()[0].stored, 1);
}

#[test]
fn seen_uuids_of_a_store_before_format_4_expire_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &small()).unwrap();
    let uuid = Uuid::now_v7();
    let old = Utc::now() - chrono::TimeDelta::days(10);
    // As format 3 recorded a sighting: the day index keyed by day, project and uuid.
    let project = 7u32;
    let mut seen = project.to_be_bytes().to_vec();
    seen.extend_from_slice(uuid.as_bytes());
    let mut by_day = day_of(old).to_be_bytes().to_vec();
    by_day.extend_from_slice(&seen);
    let mut txn = store.env.write_txn().unwrap();
    store.seen.put(&mut txn, &seen, &day_of(old)).unwrap();
    store.seen_by_day.put(&mut txn, &by_day, &[]).unwrap();
    txn.commit().unwrap();
    assert_eq!(store.expire_seen(Utc::now(), 7, 100).unwrap(), 1);
    let txn = store.env.read_txn().unwrap();
    assert!(store.seen.get(&txn, &seen).unwrap().is_none());
    assert!(store.seen_by_day.is_empty(&txn).unwrap());
}

#[test]
fn each_day_s_uuids_are_indexed_in_the_order_they_came() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &small()).unwrap();
    // Random uuids, as posthog-python sends them.
    let uuids: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
    for pair in uuids.chunks(2) {
        store.commit(vec![batch("t", pair)], options()).unwrap();
    }
    let txn = store.env.read_txn().unwrap();
    let indexed: Vec<Uuid> = store
        .seen_by_day
        .iter(&txn)
        .unwrap()
        .map(|entry| Uuid::from_slice(&entry.unwrap().1[4..]).unwrap())
        .collect();
    assert_eq!(indexed, uuids);
}

#[test]
fn monitoring_reads_counts_and_the_age_of_pending_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &small()).unwrap();
    assert_eq!(store.counts().unwrap(), StoreCounts::default());
    assert_eq!(store.pending_since(0).unwrap(), None);

    let mut request = batch("t", &[Uuid::now_v7(), Uuid::now_v7()]);
    request.events[0].person.mode = PersonMode::Full;
    let received = timestamp::to_micros(request.created_at);
    let options = options();
    store.commit(vec![request], options).unwrap();
    assert!(store.last_sync() > Duration::ZERO);
    let counts = StoreCounts {
        persons: 1,
        distinct_ids: 1,
        groups: 0,
    };
    assert_eq!(store.counts().unwrap(), counts);
    // Entries: the first event with its person's snapshot (positions 1 and 2), then the second
    // event (3); each reached the store with its request.
    assert_eq!(store.pending_since(0).unwrap(), Some(received));
    assert_eq!(store.pending_since(2).unwrap(), Some(received));
    assert_eq!(store.pending_since(3).unwrap(), None);
    let state = store.outbox_state().unwrap();
    assert_eq!((state.rows, state.next_seq), (3, 4));
    let chunk = store.read_outbox(0, 1, u64::MAX).unwrap();
    assert_eq!((chunk.records.len(), chunk.last_seq), (1, 2));
    assert_eq!(store.trim_outbox(2, 100).unwrap(), 2);
    assert_eq!(store.outbox_state().unwrap().rows, 1);
}

fn upgraded_on_first_commit(path: &Path, format_before: u64) {
    let store = Store::open(path, &small()).unwrap();
    store.commit(vec![batch("t", &[Uuid::now_v7()])], options()).unwrap();
    let mut txn = store.env.write_txn().unwrap();
    write_u64(store.meta, &mut txn, META_FORMAT, format_before).unwrap();
    txn.commit().unwrap();
    drop(store);
    let store = Store::open(path, &small()).unwrap();
    assert_eq!(store.outbox_state().unwrap().rows, 1);
    let format = |store: &Store| read_u64(store.meta, &store.env.read_txn().unwrap(), META_FORMAT).unwrap();
    // Opening it (as `hogflare doctor` does) changes nothing; its first commit stamps it.
    assert_eq!(format(&store), format_before);
    drop(store);
    let store = Store::open(path, &small()).unwrap();
    store.commit(vec![batch("t", &[Uuid::now_v7()])], options()).unwrap();
    assert_eq!(format(&store), STORE_FORMAT);
    drop(store);
}

#[test]
fn a_store_of_another_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &small()).unwrap();
    store.commit(vec![batch("t", &[Uuid::now_v7()])], options()).unwrap();
    // What a store written before the format was recorded looks like.
    let mut txn = store.env.write_txn().unwrap();
    store.meta.delete(&mut txn, META_FORMAT).unwrap();
    txn.commit().unwrap();
    drop(store);
    let refused = Store::open(dir.path(), &small()).err().unwrap().to_string();
    assert!(refused.contains("has format 1"), "{refused}");
    // Stores of formats 2 to 5 are read as they are, and stamped with the current format when
    // written.
    for format in 2..=4 {
        upgraded_on_first_commit(tempfile::tempdir().unwrap().path(), format);
    }
    let older = tempfile::tempdir().unwrap();
    upgraded_on_first_commit(older.path(), 5);
    // One written by a later hogflare is refused.
    let store = Store::open(older.path(), &small()).unwrap();
    let mut txn = store.env.write_txn().unwrap();
    write_u64(store.meta, &mut txn, META_FORMAT, 7).unwrap();
    txn.commit().unwrap();
    drop(store);
    let refused = Store::open(older.path(), &small()).err().unwrap().to_string();
    assert!(
        refused.contains("has format 7, and this hogflare reads format 6 only"),
        "{refused}"
    );
    // A new store gets the current format, and opens again.
    let fresh = tempfile::tempdir().unwrap();
    drop(Store::open(fresh.path(), &small()).unwrap());
    assert!(Store::open(fresh.path(), &small()).is_ok());
}

#[test]
fn cursors_persist() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &small()).unwrap();
    assert_eq!(store.cursor("lake").unwrap(), None);
    store.set_cursor("lake", 42).unwrap();
    assert_eq!(store.cursor("lake").unwrap(), Some(42));
}

#[test]
fn an_outbox_advanced_past_a_position_numbers_new_rows_after_it_and_never_moves_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &small()).unwrap();
    store
        .commit(vec![batch("t", &[Uuid::now_v7(), Uuid::now_v7()])], options())
        .unwrap();
    assert_eq!(store.first_position().unwrap(), 1);
    assert!(store.advance_outbox(100).unwrap());
    assert!(!store.advance_outbox(100).unwrap(), "already past 100");
    assert!(!store.advance_outbox(7).unwrap(), "never back");
    store.commit(vec![batch("t", &[Uuid::now_v7()])], options()).unwrap();
    let seqs: Vec<u64> = store
        .read_outbox(0, 10, u64::MAX)
        .unwrap()
        .records
        .iter()
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 101]);
    assert_eq!(store.outbox_state().unwrap().rows, 3);
    store.trim_outbox(101, 10).unwrap();
    assert_eq!(store.first_position().unwrap(), 102, "empty: the next row's");
}

#[test]
fn a_store_keeps_its_id_and_a_new_store_gets_another() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(&dir.path().join("a"), &small()).unwrap().id();
    assert!(!first.is_nil());
    assert_eq!(Store::open(&dir.path().join("a"), &small()).unwrap().id(), first);
    assert_ne!(Store::open(&dir.path().join("b"), &small()).unwrap().id(), first);
}
