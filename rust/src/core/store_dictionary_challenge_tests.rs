//! Dictionaries replaced: one unlike the traffic the sinks read gives way to a challenger that
//! does better on samples held back from its training; one that loses waits before the next try.

use super::*;

#[test]
fn a_dictionary_unlike_the_traffic_is_replaced_once_the_sinks_have_judged_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 150);
    let orders: Vec<String> = (0..300)
        .map(|n| {
            format!(r#"{{"order":{n},"sku":"SKU-{n:08}","warehouse":"north-{n}","lines":[{n},{n},{n}]}}"#).repeat(8)
        })
        .collect();
    let unlike = zstd::dict::from_samples(&orders, 16 << 10).unwrap();
    store.install_dictionary(&unlike, None).unwrap();
    store.commit(vec![pageviews(1_200)], options()).unwrap();
    delivered(&store);
    assert_eq!(
        store.outbox_dictionary().unwrap(),
        Some(1),
        "judged by this read, sampled from the next"
    );
    delivered(&store);
    assert_eq!(store.outbox_dictionary().unwrap(), Some(2));

    let before = store.outbox_state().unwrap().bytes;
    store.commit(vec![pageviews(1_200)], options()).unwrap();
    let per_entry = (store.outbox_state().unwrap().bytes - before) / 1_200;
    assert!(
        per_entry < 200,
        "{per_entry} bytes an entry with a dictionary like the traffic"
    );
    // The new one does as well as any: reads of its entries make no third.
    delivered(&store);
    delivered(&store);
    assert_eq!(store.outbox_dictionary().unwrap(), Some(2));
}

#[test]
fn a_lost_challenge_waits_unless_the_traffic_changes() {
    let policy = DictionaryPolicy {
        samples: 300,
        sample_bytes: usize::MAX,
    };
    let current = outbox_dictionary::Installed { id: 1, installed_at: 1 };
    let entries = stored_entries(pageviews(300));
    let size = entries.iter().map(Vec::len).sum::<usize>() / entries.len();
    // A thousand entries of `size` bytes read, of which the dictionary left `percent` %.
    let read = |trainer: &mut DictionaryTrainer, percent: usize, size: usize| {
        for _ in 0..1_000 {
            trainer.observe(1, size * percent / 100, size);
        }
    };
    let mut trainer = DictionaryTrainer::default();
    read(&mut trainer, 10, size);
    assert!(
        !trainer.wants_samples(&policy, Some(current), 50_000),
        "a tenth left is good enough"
    );
    // A challenge at position 50,000, with 30 % left, that the challenger loses.
    let lost = || {
        let mut trainer = DictionaryTrainer::default();
        read(&mut trainer, 30, size);
        assert!(trainer.wants_samples(&policy, Some(current), 50_000));
        for entry in &entries {
            trainer.push(&policy, entry);
        }
        let same = trainer.train(&policy, 50_000, Some(pageview_dictionary()));
        assert!(same.is_none(), "no clearly better dictionary from the same traffic");
        trainer
    };

    let mut trainer = lost();
    read(&mut trainer, 30, size);
    assert!(
        !trainer.wants_samples(&policy, Some(current), 59_999),
        "the same traffic waits 10,000 rows"
    );
    assert!(trainer.wants_samples(&policy, Some(current), 60_000));
    let mut trainer = lost();
    read(&mut trainer, 40, size);
    assert!(
        trainer.wants_samples(&policy, Some(current), 50_001),
        "the traffic changed: 40 % left against 30 %"
    );
    let mut trainer = lost();
    read(&mut trainer, 30, 2 * size);
    assert!(
        trainer.wants_samples(&policy, Some(current), 50_001),
        "the traffic changed: entries twice the size"
    );
}

#[test]
fn a_dictionary_made_while_users_were_seeded_gives_way_when_the_traffic_starts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1_500);
    let mut after = 0;
    // As the lake's shipper does: chunks of up to 5,000 rows, then the delivered rows forgotten.
    let mut ship = |store: &Store| loop {
        let last = store
            .with_outbox(after, 5_000, u64::MAX, |read| {
                Ok(read.entries.last().map(|(seq, _)| *seq))
            })
            .unwrap();
        let Some(last) = last else {
            store.trim_outbox(after, usize::MAX).unwrap();
            break;
        };
        after = last;
    };
    // 20,000 small `$set` events, each creating its user.
    for commit in 0..200 {
        let uuids: Vec<Uuid> = (0..100).map(|_| Uuid::now_v7()).collect();
        let mut request = batch("phc_t", &uuids);
        for (n, event) in request.events.iter_mut().enumerate() {
            event.distinct_id = format!("user-{}", commit * 100 + n);
            event.properties = r#"{"$set":{"plan":"free","signed_up":true},"$lib":"posthog-node"}"#.into();
            event.person = crate::core::person_event::PersonEvent::default();
        }
        store.commit(vec![request], options()).unwrap();
        if commit % 10 == 9 {
            ship(&store);
        }
    }
    let seeded = store.outbox_dictionary().unwrap().unwrap();

    for _ in 0..5 {
        store.commit(vec![pageviews(1_000)], options()).unwrap();
        ship(&store);
    }
    assert!(store.outbox_dictionary().unwrap().unwrap() > seeded);
    let before = store.outbox_state().unwrap().bytes;
    store.commit(vec![pageviews(1_000)], options()).unwrap();
    let per_entry = (store.outbox_state().unwrap().bytes - before) / 1_000;
    assert!(per_entry < 150, "{per_entry} bytes a pageview's entry");
}
