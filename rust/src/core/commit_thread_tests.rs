use std::collections::BTreeMap;
use std::time::Duration;

use uuid::Uuid;

use super::*;
use crate::core::person_store_tests::{capture, Harness, TOKEN};
use crate::core::request::RouteKind;
use crate::core::store::StoreConfig;

fn request(uuids: &[Uuid]) -> DecodedRequest {
    crate::core::store::tests::batch("phc_t", uuids)
}

fn limits(max_outbox_bytes: u64) -> CommitLimits {
    CommitLimits {
        dedupe_window_days: 7,
        max_outbox_bytes,
    }
}

fn start(max_outbox_bytes: u64) -> (tempfile::TempDir, Arc<Store>, CommitThread) {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        map_size: 64 << 20,
        max_readers: 16,
        ..StoreConfig::default()
    };
    let store = Arc::new(Store::open(dir.path(), &config).unwrap());
    let limits = limits(max_outbox_bytes);
    let thread = CommitThread::start(Arc::clone(&store), limits).unwrap();
    (dir, store, thread)
}

/// Every finished commit until `tickets` outcomes have come back.
fn wait_for(thread: &CommitThread, tickets: usize) -> Vec<FinishedCommit> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut finished = Vec::new();
    while finished.iter().map(|f: &FinishedCommit| f.tickets.len()).sum::<usize>() < tickets {
        assert!(Instant::now() < deadline, "the commits did not finish");
        std::thread::sleep(Duration::from_millis(1));
        finished.extend(thread.finished());
    }
    finished
}

#[test]
fn each_request_gets_its_own_outcome_under_its_ticket() {
    let (_dir, store, thread) = start(u64::MAX);
    assert!(thread.finished().is_empty());
    let shared = Uuid::now_v7();
    let submitted = [
        (thread.submit(request(&[shared, Uuid::now_v7()])).unwrap(), (2, 0)),
        (thread.submit(request(&[Uuid::now_v7()])).unwrap(), (1, 0)),
        // The same uuid again, sent later: a duplicate whichever commit it shares.
        (thread.submit(request(&[shared])).unwrap(), (0, 1)),
    ];
    let mut outcomes = BTreeMap::new();
    for finished in wait_for(&thread, submitted.len()) {
        let results = finished.outcomes.unwrap();
        assert_eq!(results.len(), finished.tickets.len());
        for (ticket, outcome) in finished.tickets.into_iter().zip(results) {
            assert!(outcomes.insert(ticket, (outcome.stored, outcome.duplicates)).is_none());
        }
    }
    for (ticket, expected) in submitted {
        assert_eq!(outcomes[&ticket], expected, "ticket {ticket}");
    }
    assert_eq!(store.outbox_state().unwrap().rows, 3);
}

#[test]
fn a_full_outbox_fails_the_commit_and_stores_nothing() {
    let (_dir, store, thread) = start(0);
    let first = thread.submit(request(&[Uuid::now_v7()])).unwrap();
    let finished = wait_for(&thread, 1);
    assert_eq!(finished[0].tickets, vec![first]);
    assert_eq!(
        store.outbox_state().unwrap().rows,
        1,
        "an empty outbox is under any mark"
    );
    let second = thread.submit(request(&[Uuid::now_v7()])).unwrap();
    let finished = wait_for(&thread, 1);
    assert_eq!(finished[0].tickets, vec![second]);
    assert!(matches!(finished[0].outcomes, Err(CoreError::OutboxFull { .. })));
    assert_eq!(store.outbox_state().unwrap().rows, 1);
}

#[test]
fn a_stopped_thread_finishes_what_was_queued_and_refuses_more() {
    let (_dir, store, thread) = start(u64::MAX);
    for _ in 0..20 {
        thread.submit(request(&[Uuid::now_v7()])).unwrap();
    }
    assert!(thread.stop());
    assert_eq!(store.outbox_state().unwrap().rows, 20);
    assert_eq!(thread.finished().iter().map(|f| f.tickets.len()).sum::<usize>(), 20);
    assert!(matches!(
        thread.submit(request(&[Uuid::now_v7()])),
        Err(CoreError::Store(_))
    ));
}

#[test]
fn a_bounded_stop_leaves_a_commit_that_waits_for_the_store() {
    let (_dir, store, thread) = start(u64::MAX);
    let (held, holding) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let holder = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            let txn = store.hold_write_lock().unwrap();
            held.send(()).unwrap();
            // Let go after a while whatever happens, so that a stop that waits anyway makes
            // this test fail on its timings rather than hang.
            let _ = released.recv_timeout(Duration::from_secs(10));
            drop(txn);
        })
    };
    holding.recv().unwrap();
    thread.submit(request(&[Uuid::now_v7()])).unwrap();
    let asked = Instant::now();
    assert!(!thread.stop_within(Some(Duration::from_millis(200))));
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert!(matches!(
        thread.submit(request(&[Uuid::now_v7()])),
        Err(CoreError::Store(_))
    ));
    // Neither a later stop nor dropping it waits for the detached thread, nor says it ended.
    let dropped = Instant::now();
    assert!(!thread.stop());
    drop(thread);
    assert!(dropped.elapsed() < Duration::from_secs(5));
    // Once the store is free the commit goes on by itself.
    release.send(()).unwrap();
    holder.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.outbox_state().unwrap().rows < 1 {
        assert!(Instant::now() < deadline, "the commit did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_bounded_stop_of_an_idle_thread_ends_it() {
    let (_dir, store, thread) = start(u64::MAX);
    thread.submit(request(&[Uuid::now_v7()])).unwrap();
    assert!(thread.stop_within(Some(Duration::from_secs(10))));
    assert_eq!(store.outbox_state().unwrap().rows, 1);
}

#[test]
fn requests_that_keep_coming_are_each_answered_once_in_commit_order() {
    let (_dir, store, thread) = start(u64::MAX);
    // Submitted while earlier commits run, so that commits follow one another and each is
    // answered after the next one's flush, the last after the thread's own sync.
    let mut tickets = Vec::new();
    for _ in 0..200 {
        tickets.push(thread.submit(request(&[Uuid::now_v7()])).unwrap());
        std::thread::sleep(Duration::from_micros(200));
    }
    let finished = wait_for(&thread, tickets.len());
    assert!(finished.len() > 1, "the requests shared a single commit");
    let mut answered: Vec<u64> = Vec::new();
    for commit in finished {
        let outcomes = commit.outcomes.unwrap();
        assert!(outcomes.iter().all(|outcome| outcome.stored == 1));
        answered.extend(commit.tickets);
    }
    // In the order they were committed, each once.
    assert_eq!(answered, tickets);
    assert_eq!(store.outbox_state().unwrap().rows, 200);
}

#[test]
fn two_writers_on_one_store_answer_every_request_once() {
    // Two commit threads stand for two worker processes: their commits interleave under the
    // store's write lock, and a commit waiting for its meta page's flush may see the other
    // thread's commit come first.
    let (_dir, store, first) = start(u64::MAX);
    let second = CommitThread::start(Arc::clone(&store), limits(u64::MAX)).unwrap();
    let mut tickets = [Vec::new(), Vec::new()];
    for round in 0..300 {
        let (thread, sent) = if round % 2 == 0 {
            (&first, &mut tickets[0])
        } else {
            (&second, &mut tickets[1])
        };
        sent.push(thread.submit(request(&[Uuid::now_v7()])).unwrap());
        if round % 3 == 0 {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
    for (thread, sent) in [(&first, &tickets[0]), (&second, &tickets[1])] {
        let mut answered = Vec::new();
        for commit in wait_for(thread, sent.len()) {
            assert!(commit.outcomes.unwrap().iter().all(|outcome| outcome.stored == 1));
            answered.extend(commit.tickets);
        }
        assert_eq!(&answered, sent);
    }
    assert_eq!(store.outbox_state().unwrap().rows, 300);
}

#[test]
fn a_commit_waiting_for_its_flush_is_refused_when_the_next_commit_fails() {
    let (_dir, store, thread) = start(u64::MAX);
    let (at_commit, reached) = mpsc::channel::<()>();
    let (go, proceed) = mpsc::channel::<bool>();
    *store.before_commit.lock().unwrap() = Some(Box::new(move || {
        at_commit.send(()).unwrap();
        if proceed.recv().unwrap() {
            Err(CoreError::Store("the disk failed".into()))
        } else {
            Ok(())
        }
    }));
    let (kept, lost) = (Uuid::now_v7(), Uuid::now_v7());
    let first = thread.submit(request(&[kept])).unwrap();
    reached.recv().unwrap();
    // Queued while the first commit writes, so the first waits for this one's flush.
    let second = thread.submit(request(&[lost])).unwrap();
    go.send(false).unwrap();
    reached.recv().unwrap();
    go.send(true).unwrap();
    let finished = wait_for(&thread, 2);
    *store.before_commit.lock().unwrap() = None;
    let refused: BTreeMap<u64, String> = finished
        .into_iter()
        .flat_map(|commit| {
            let Err(CoreError::Store(message)) = commit.outcomes else {
                panic!("a commit was answered: {:?}", commit.outcomes)
            };
            commit.tickets.into_iter().map(move |ticket| (ticket, message.clone()))
        })
        .collect();
    assert_eq!(refused[&second], "the disk failed");
    assert!(
        refused[&first].contains("could not confirm this commit was written"),
        "{}",
        refused[&first]
    );
    // The first commit's row was stored all the same: the client's retry is a duplicate.
    assert_eq!(store.outbox_state().unwrap().rows, 1);
    let retry = thread.submit(request(&[kept, lost])).unwrap();
    let answer = wait_for(&thread, 1).remove(0);
    assert_eq!(answer.tickets, vec![retry]);
    let outcome = &answer.outcomes.unwrap()[0];
    assert_eq!((outcome.stored, outcome.duplicates), (1, 1));
}

#[test]
fn a_commit_lasts_until_the_flush_that_made_it_durable() {
    let (_dir, store, thread) = start(u64::MAX);
    let (at_commit, reached) = mpsc::channel::<()>();
    let (go, proceed) = mpsc::channel::<()>();
    *store.before_commit.lock().unwrap() = Some(Box::new(move || {
        at_commit.send(()).unwrap();
        proceed.recv().unwrap();
        Ok(())
    }));
    let first = thread.submit(request(&[Uuid::now_v7()])).unwrap();
    reached.recv().unwrap();
    // Queued while the first commit writes: the first is durable only once this one has flushed.
    let second = thread.submit(request(&[Uuid::now_v7()])).unwrap();
    go.send(()).unwrap();
    reached.recv().unwrap();
    let held = Duration::from_millis(60);
    std::thread::sleep(held);
    go.send(()).unwrap();
    let finished = wait_for(&thread, 2);
    *store.before_commit.lock().unwrap() = None;
    let seconds = |ticket: u64| {
        let commit = finished.iter().find(|commit| commit.tickets == [ticket]).unwrap();
        assert!(commit.outcomes.is_ok());
        assert!(commit.sync_seconds <= commit.seconds);
        commit.seconds
    };
    assert!(seconds(first) >= held.as_secs_f64(), "{}", seconds(first));
    assert!(seconds(second) >= held.as_secs_f64(), "{}", seconds(second));
}

#[test]
fn two_writers_updating_the_same_persons_lose_no_update() {
    // Two processes' commits take turns at the store's write lock, each changing the persons
    // the other just changed: every update reads the person as the commit before left it.
    let (_dir, store, first) = start(u64::MAX);
    let second = CommitThread::start(Arc::clone(&store), limits(u64::MAX)).unwrap();
    let decoder = Harness::new();
    let mut tickets = [Vec::new(), Vec::new()];
    for round in 0..200 {
        let events: Vec<_> = (0..5)
            .map(|user| {
                capture(
                    &format!("user-{user}"),
                    serde_json::json!({"$set": {format!("k{round}"): round}}),
                )
            })
            .collect();
        let request = decoder.decode(RouteKind::Event, &serde_json::json!(events)).unwrap();
        let thread = if round % 2 == 0 { &first } else { &second };
        tickets[round % 2].push(thread.submit(request).unwrap());
    }
    for (thread, sent) in [(&first, &tickets[0]), (&second, &tickets[1])] {
        for commit in wait_for(thread, sent.len()) {
            assert!(commit.outcomes.unwrap().iter().all(|outcome| outcome.stored == 5));
        }
    }
    for user in 0..5 {
        let person = store.person(Some(TOKEN), &format!("user-{user}")).unwrap().unwrap();
        for round in 0..200 {
            let value = round.to_string();
            assert_eq!(
                person.get(&format!("k{round}")),
                Some((value.as_str(), false)),
                "user-{user}"
            );
        }
    }
}
