//! The outbox's compression dictionaries: entries committed after one is installed are stored
//! compressed and read back as they were encoded, the first is made from what the sinks read,
//! each is kept while an entry needs it, and one that does not compress is not installed.

use uuid::Uuid;

use super::tests::batch;
use super::*;
use crate::core::decode::DecodedRequest;
use crate::core::dictionary_training::DictionaryTrainer;
use crate::core::outbox_dictionary;

/// Events with the ~30 properties of a browser SDK's pageview, differing from one to the next
/// as real ones do.
fn pageviews(count: usize) -> DecodedRequest {
    let uuids: Vec<Uuid> = (0..count).map(|_| Uuid::now_v7()).collect();
    pageviews_of(&uuids)
}

fn pageviews_of(uuids: &[Uuid]) -> DecodedRequest {
    let at = DateTime::from_timestamp(1_764_000_000, 0).unwrap();
    let mut request = batch("phc_t", uuids);
    request.created_at = at;
    for (n, event) in request.events.iter_mut().enumerate() {
        event.timestamp = at;
        event.distinct_id = format!("user-{}", n % 37);
        event.properties = format!(
            r#"{{"$os":"Mac OS X","$browser":"Chrome","$browser_version":{},"$current_url":"https://shop.example.com/products/{n}","$pathname":"/products/{n}","$screen_height":1117,"$screen_width":1728,"$lib":"web","$lib_version":"1.418.10","$session_id":"0193a8f0-2222-7abc-8def-{n:012}","$referrer":"https://www.google.com/","utm_source":"newsletter","title":"Item {n}","$raw_user_agent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"}}"#,
            120 + n % 13
        );
    }
    request
}

fn options() -> CommitOptions {
    CommitOptions {
        dedupe_window_days: 7,
        max_outbox_bytes: u64::MAX,
        now: Utc::now(),
    }
}

fn open(dir: &std::path::Path, samples: usize) -> Store {
    let config = StoreConfig {
        map_size: 64 << 20,
        max_readers: 16,
        compress_outbox: true,
        dictionary: DictionaryPolicy {
            samples,
            sample_bytes: usize::MAX,
        },
        ..StoreConfig::default()
    };
    Store::open(dir, &config).unwrap()
}

/// The stored bytes of every entry, by position.
fn stored(store: &Store) -> Vec<(u64, Vec<u8>)> {
    let txn = store.env.read_txn().unwrap();
    let all = store.outbox.iter(&txn).unwrap();
    all.map(|entry| entry.map(|(seq, bytes)| (seq, bytes.to_vec())).unwrap())
        .collect()
}

/// Every entry as the sinks get it.
fn delivered(store: &Store) -> Vec<(u64, Vec<u8>)> {
    store
        .with_outbox(0, usize::MAX, u64::MAX, |read| {
            Ok(read.entries.iter().map(|(seq, bytes)| (*seq, bytes.to_vec())).collect())
        })
        .unwrap()
}

/// A dictionary made from browser pageviews, once per test run.
pub(crate) fn pageview_dictionary() -> &'static [u8] {
    static MADE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    MADE.get_or_init(|| dictionary_from(pageviews(300)))
}

/// The entries a store makes of `requests`.
fn stored_entries(requests: DecodedRequest) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), usize::MAX);
    store.commit(vec![requests], options()).unwrap();
    stored(&store).into_iter().map(|(_, entry)| entry).collect()
}

fn dictionary_from(requests: DecodedRequest) -> Vec<u8> {
    let entries = stored_entries(requests);
    let mut samples = DictionaryTrainer::default();
    let policy = DictionaryPolicy {
        samples: entries.len(),
        sample_bytes: usize::MAX,
    };
    for entry in &entries {
        samples.push(&policy, entry);
    }
    samples.train(&policy, 1, None).expect("a dictionary")
}

#[test]
fn entries_after_a_dictionary_are_stored_compressed_and_read_back_as_encoded() {
    let (plain_dir, packed_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (plain, packed) = (open(plain_dir.path(), usize::MAX), open(packed_dir.path(), usize::MAX));
    let first: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
    let later: Vec<Uuid> = (0..200).map(|_| Uuid::now_v7()).collect();
    for store in [&plain, &packed] {
        store.commit(vec![pageviews_of(&first)], options()).unwrap();
    }
    assert_eq!(packed.install_dictionary(pageview_dictionary(), None).unwrap(), Some(1));
    assert_eq!(
        packed.install_dictionary(&[0; 64], None).unwrap(),
        None,
        "1 is installed"
    );
    for store in [&plain, &packed] {
        store.commit(vec![pageviews_of(&later)], options()).unwrap();
    }

    let entries = stored(&packed);
    assert!(entries[..50]
        .iter()
        .all(|(_, bytes)| !outbox_dictionary::is_compressed(bytes)));
    assert!(entries[50..]
        .iter()
        .all(|(_, bytes)| outbox_dictionary::is_compressed(bytes)));
    assert_eq!(delivered(&packed), delivered(&plain));
    assert_eq!(
        packed.read_outbox(0, 1000, u64::MAX).unwrap().records,
        plain.read_outbox(0, 1000, u64::MAX).unwrap().records
    );
    assert_eq!(packed.pending_since(60).unwrap(), plain.pending_since(60).unwrap());
    let (small, large) = (packed.outbox_state().unwrap(), plain.outbox_state().unwrap());
    assert_eq!((small.next_seq, small.rows), (large.next_seq, large.rows));
    assert!(small.bytes * 3 < large.bytes, "{} against {}", small.bytes, large.bytes);
}

#[test]
fn the_first_dictionary_is_made_from_what_the_sinks_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 150);
    store.commit(vec![pageviews(100)], options()).unwrap();
    delivered(&store);
    assert_eq!(store.outbox_dictionary().unwrap(), None, "100 samples of 150");
    // Another sink, or a retry, reads the same hundred: each entry is a sample once.
    delivered(&store);
    assert_eq!(store.outbox_dictionary().unwrap(), None, "still 100 samples of 150");
    store.commit(vec![pageviews(100)], options()).unwrap();
    // The sink reads the first hundred again (it has not moved its cursor) and the new ones.
    delivered(&store);
    assert_eq!(store.outbox_dictionary().unwrap(), Some(1));
    store.commit(vec![pageviews(100)], options()).unwrap();
    assert!(outbox_dictionary::is_compressed(&stored(&store)[250].1));
    let rows: Vec<u64> = delivered(&store).iter().map(|(seq, _)| *seq).collect();
    assert_eq!(rows, (1..=300).collect::<Vec<u64>>());
}

#[test]
fn a_dictionary_is_kept_while_an_entry_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), usize::MAX);
    let dictionary = pageview_dictionary();
    store.install_dictionary(dictionary, None).unwrap();
    store.commit(vec![pageviews(10)], options()).unwrap();
    store.install_dictionary(dictionary, Some(1)).unwrap();
    store.commit(vec![pageviews(10)], options()).unwrap();
    let held = |store: &Store| {
        let txn = store.env.read_txn().unwrap();
        (1..=3)
            .filter(|id| store.dictionary(&txn, *id).unwrap().is_some())
            .collect::<Vec<u32>>()
    };
    let before = delivered(&store);

    store.trim_outbox(9, 100).unwrap();
    assert_eq!(held(&store), vec![1, 2], "position 10 needs the first");
    assert_eq!(delivered(&store), before[9..]);
    store.trim_outbox(10, 100).unwrap();
    assert_eq!(held(&store), vec![2]);
    assert_eq!(delivered(&store), before[10..]);
    store.trim_outbox(20, 100).unwrap();
    assert_eq!(held(&store), vec![2], "the one commits use stays");
    store.commit(vec![pageviews(10)], options()).unwrap();
    assert_eq!(delivered(&store).len(), 10);
}

#[test]
fn an_entry_whose_dictionary_is_gone_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), usize::MAX);
    store.install_dictionary(pageview_dictionary(), None).unwrap();
    store.commit(vec![pageviews(3)], options()).unwrap();
    let mut txn = store.env.write_txn().unwrap();
    store.meta.delete(&mut txn, &outbox_dictionary::meta_key(1)).unwrap();
    txn.commit().unwrap();
    drop(store);
    let reopened = open(dir.path(), usize::MAX);
    let refused = reopened
        .with_outbox(0, 10, u64::MAX, |_| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("compressed with dictionary 1, which the store no longer holds"),
        "{refused}"
    );
}

#[test]
fn samples_that_do_not_compress_make_no_dictionary_for_a_while() {
    let policy = DictionaryPolicy {
        samples: 200,
        sample_bytes: usize::MAX,
    };
    let mut samples = DictionaryTrainer::default();
    for _ in 0..200 {
        let noise: Vec<u8> = (0..64).flat_map(|_| Uuid::new_v4().into_bytes()).collect();
        samples.push(&policy, &noise);
    }
    assert!(!samples.push(&policy, b"one too many"));
    assert!(samples.train(&policy, 5_000, None).is_none());
    assert!(
        !samples.wants_samples(&policy, None, 14_999),
        "not before 10,000 rows more"
    );
    assert!(samples.wants_samples(&policy, None, 15_000));
}

#[test]
fn a_compressed_person_event_keeps_counting_two_positions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), usize::MAX);
    store.install_dictionary(pageview_dictionary(), None).unwrap();
    let mut request = pageviews(1);
    request.events[0].person = crate::core::person_event::PersonEvent::default();
    store
        .commit(vec![request, batch("phc_t", &[Uuid::now_v7()])], options())
        .unwrap();
    let entries = stored(&store);
    assert!(outbox_dictionary::is_compressed(&entries[0].1));
    assert_eq!(entries.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), vec![1, 3]);
    assert_eq!(store.outbox_state().unwrap().rows, 3);
}

#[test]
fn a_store_with_compression_off_stores_entries_as_they_are_and_still_reads_compressed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 100);
    store.install_dictionary(pageview_dictionary(), None).unwrap();
    store.commit(vec![pageviews(10)], options()).unwrap();
    drop(store);
    let config = StoreConfig {
        map_size: 64 << 20,
        max_readers: 16,
        dictionary: DictionaryPolicy {
            samples: 100,
            sample_bytes: usize::MAX,
        },
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), &config).unwrap();
    store.commit(vec![pageviews(300)], options()).unwrap();
    let entries = stored(&store);
    assert!(entries[..10]
        .iter()
        .all(|(_, bytes)| outbox_dictionary::is_compressed(bytes)));
    assert!(entries[10..]
        .iter()
        .all(|(_, bytes)| !outbox_dictionary::is_compressed(bytes)));
    assert_eq!(delivered(&store).len(), 310);
    delivered(&store);
    assert_eq!(store.outbox_dictionary().unwrap(), Some(1), "no challenger made");
}

#[test]
fn a_reader_keeps_the_last_dictionaries_it_met_and_loads_an_older_one_again() {
    let dictionary = pageview_dictionary();
    let entry = stored_entries(pageviews(1)).remove(0);
    let mut expander = outbox_dictionary::EntryExpander::default();
    let mut loads = Vec::new();
    for id in [1, 2, 3, 4, 5, 1, 5] {
        let mut compressor = outbox_dictionary::EntryCompressor::new(id, dictionary).unwrap();
        let mut compressed = Vec::new();
        assert!(compressor.compress(&entry, &mut compressed).unwrap());
        let expanded = expander
            .expand(&compressed, |asked| {
                loads.push(asked);
                Ok(Some(dictionary.to_vec()))
            })
            .unwrap();
        assert_eq!(expanded, entry);
    }
    // Four are kept: the fifth put the first out, and it was loaded again when met again.
    assert_eq!(loads, [1, 2, 3, 4, 5, 1]);
}

#[path = "store_dictionary_challenge_tests.rs"]
mod challenge;
