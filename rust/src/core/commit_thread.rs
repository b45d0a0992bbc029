//! The store's writer on a thread of its own, which never needs Python.
//!
//! A worker's event loop hands each request to the thread as it is decoded and goes on serving.
//! The thread commits everything queued at the moment it holds the store's write lock (group
//! commit: requests that arrived during the previous sync, or while another process held the
//! lock, share one transaction and one sync); when the commit is synced it records the outcomes
//! and writes a byte to a socket the event loop watches. A commit run from a Python thread
//! instead had to take the GIL back from the busy event loop to deliver every outcome, which
//! cost both threads switches and held the answers back by up to Python's switch interval.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::decode::DecodedRequest;
use super::error::{CoreError, Result};
use super::store::{CommitOptions, CommitOutcome, Store};

/// What the thread commits with, besides the time, which it reads as each commit starts.
#[derive(Debug, Clone, Copy)]
pub struct CommitLimits {
    pub dedupe_window_days: u32,
    pub max_outbox_bytes: u64,
}

/// One commit the thread finished.
#[derive(Debug)]
pub struct FinishedCommit {
    /// The tickets `submit` gave the requests it stored, in the order of `outcomes`.
    pub tickets: Vec<u64>,
    /// One outcome per ticket; or why none of them was stored.
    pub outcomes: Result<Vec<CommitOutcome>>,
    /// From asking for the store's write lock to the end of the sync.
    pub seconds: f64,
    /// Writing and syncing the pages, part of `seconds`.
    pub sync_seconds: f64,
}

type Job = (u64, DecodedRequest);

pub struct CommitThread {
    jobs: Mutex<Option<Sender<Job>>>,
    next_ticket: AtomicU64,
    finished: Arc<Mutex<Vec<FinishedCommit>>>,
    /// Readable when a commit has finished; one byte per commit.
    wake: UnixStream,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Disconnected once the thread has returned, so that a stop can wait for it with a limit.
    ended: Mutex<Receiver<()>>,
    /// A bounded stop gave up on the thread: nothing waits for it, and no stop says it ended.
    detached: AtomicBool,
}

impl CommitThread {
    pub fn start(store: Arc<Store>, limits: CommitLimits) -> Result<Self> {
        let (wake, notify) = UnixStream::pair().map_err(thread_error)?;
        wake.set_nonblocking(true).map_err(thread_error)?;
        notify.set_nonblocking(true).map_err(thread_error)?;
        let (jobs, queue) = mpsc::channel();
        let finished = Arc::new(Mutex::new(Vec::new()));
        let results = Arc::clone(&finished);
        let (ending, ended) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("hogflare-commit".into())
            .spawn(move || {
                let _ending = ending;
                run(&store, limits, &queue, &results, notify);
            })
            .map_err(thread_error)?;
        Ok(Self {
            jobs: Mutex::new(Some(jobs)),
            next_ticket: AtomicU64::new(1),
            finished,
            wake,
            thread: Mutex::new(Some(thread)),
            ended: Mutex::new(ended),
            detached: AtomicBool::new(false),
        })
    }

    /// Queue a request for the next commit; `finished` gives its outcome, under the ticket
    /// returned here, once the socket is readable.
    pub fn submit(&self, request: DecodedRequest) -> Result<u64> {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let sent = jobs.as_ref().is_some_and(|jobs| jobs.send((ticket, request)).is_ok());
        if sent {
            Ok(ticket)
        } else {
            Err(CoreError::Store("the store's commit thread has stopped".into()))
        }
    }

    /// The socket to watch for finished commits.
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// The commits finished since the last call, oldest first.
    pub fn finished(&self) -> Vec<FinishedCommit> {
        let mut buffer = [0u8; 64];
        // The byte is written after the outcome is recorded, so draining first cannot lose one.
        while matches!((&self.wake).read(&mut buffer), Ok(n) if n > 0) {}
        std::mem::take(&mut *self.finished.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Finish the commits queued, then stop the thread. Later submissions are refused.
    /// Whether the thread has ended (not after a bounded stop gave up on it).
    pub fn stop(&self) -> bool {
        self.stop_within(None)
    }

    /// `stop`, waiting at most `limit` for the commits queued: whether the thread has ended.
    /// One that has not (a commit waiting for a store another process holds, say) is left to
    /// finish on its own; whatever it stores was never acknowledged, and a process that exits
    /// takes it along with no harm to the store.
    pub fn stop_within(&self, limit: Option<Duration>) -> bool {
        drop(self.jobs.lock().unwrap_or_else(PoisonError::into_inner).take());
        if let Some(limit) = limit {
            let ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
            if matches!(ended.recv_timeout(limit), Err(mpsc::RecvTimeoutError::Timeout)) {
                // Detached: nothing waits for it again, not even `Drop`.
                drop(self.thread.lock().unwrap_or_else(PoisonError::into_inner).take());
                self.detached.store(true, Ordering::Relaxed);
                return false;
            }
        }
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(thread) = thread {
            // The thread catches panics of a commit; one elsewhere would already be reported.
            let _ = thread.join();
        }
        !self.detached.load(Ordering::Relaxed)
    }
}

impl Drop for CommitThread {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// `Store::commit_gathered`, with a panic turned into the store's error. A panic is a bug some
/// input reaches: its transaction is aborted as it unwinds, nothing is stored, and the requests
/// get the store's 503 rather than taking the thread (or the worker) down.
pub fn commit_or_refuse(
    store: &Store,
    gather: impl FnOnce() -> Vec<DecodedRequest>,
    options: CommitOptions,
) -> Result<Vec<CommitOutcome>> {
    catch_unwind(AssertUnwindSafe(|| store.commit_gathered(gather, options)))
        .unwrap_or_else(|_| Err(CoreError::Store("the commit failed (internal error)".into())))
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(thread_error)`
fn thread_error(err: std::io::Error) -> CoreError {
    CoreError::Store(format!("cannot start the store's commit thread: {err}"))
}

fn run(
    store: &Store,
    limits: CommitLimits,
    queue: &Receiver<Job>,
    results: &Mutex<Vec<FinishedCommit>>,
    mut notify: UnixStream,
) {
    while let Ok(first) = queue.recv() {
        let options = CommitOptions {
            dedupe_window_days: limits.dedupe_window_days,
            max_outbox_bytes: limits.max_outbox_bytes,
            now: Utc::now(),
        };
        let started = Instant::now();
        let mut tickets = vec![first.0];
        let gather = || {
            let mut requests = vec![first.1];
            for (ticket, request) in queue.try_iter() {
                tickets.push(ticket);
                requests.push(request);
            }
            requests
        };
        let outcomes = commit_or_refuse(store, gather, options);
        let finished = FinishedCommit {
            tickets,
            outcomes,
            seconds: started.elapsed().as_secs_f64(),
            sync_seconds: store.last_sync().as_secs_f64(),
        };
        results.lock().unwrap_or_else(PoisonError::into_inner).push(finished);
        // A full socket already wakes the reader, which takes every finished commit at once;
        // a closed one means nobody is left to answer.
        if let Err(err) = notify.write(&[1]) {
            if !matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;
    use crate::core::store::StoreConfig;

    fn request(uuids: &[Uuid]) -> DecodedRequest {
        crate::core::store::tests::batch("phc_t", uuids)
    }

    fn start(max_outbox_bytes: u64) -> (tempfile::TempDir, Arc<Store>, CommitThread) {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            map_size: 64 << 20,
            max_readers: 16,
            ..StoreConfig::default()
        };
        let store = Arc::new(Store::open(dir.path(), &config).unwrap());
        let limits = CommitLimits {
            dedupe_window_days: 7,
            max_outbox_bytes,
        };
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
}
