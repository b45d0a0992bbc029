//! The store's writer on a thread of its own, which never needs Python.
//!
//! A worker's event loop hands each request to the thread as it is decoded and goes on serving.
//! The thread commits everything queued at the moment it holds the store's write lock (group
//! commit: requests that arrived during the previous sync, or while another process held the
//! lock, share one transaction and one sync); once the commit is on disk it records the outcomes
//! and writes a byte to a socket the event loop watches. A commit is on disk once the next one has
//! flushed the file (LMDB's deferred meta page, see `store.rs`), or, when nothing else is queued,
//! once the thread has synced it: a stream of commits pays one disk flush each instead of two.
//! A commit run from a Python thread instead had to take the GIL back from the busy event loop
//! to deliver every outcome, which cost both threads switches and held the answers back by up to
//! Python's switch interval.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
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
    /// From asking for the store's write lock until the commit was on disk and handed over to
    /// be answered: its own flush, then the next commit's or a sync, which takes its meta page.
    pub seconds: f64,
    /// Writing and flushing the pages, part of `seconds`: the transaction's own, and the sync
    /// made for it when nothing came after it.
    pub sync_seconds: f64,
    started: Instant,
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
    refusing_panics(|| store.commit_gathered(gather, options))
}

fn refusing_panics(commit: impl FnOnce() -> Result<Vec<CommitOutcome>>) -> Result<Vec<CommitOutcome>> {
    catch_unwind(AssertUnwindSafe(commit))
        .unwrap_or_else(|_| Err(CoreError::Store("the commit failed (internal error)".into())))
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(thread_error)`
fn thread_error(err: std::io::Error) -> CoreError {
    CoreError::Store(format!("cannot start the store's commit thread: {err}"))
}

/// Where the thread's finished commits go.
struct Outcomes<'a> {
    results: &'a Mutex<Vec<FinishedCommit>>,
    notify: UnixStream,
}

impl Outcomes<'_> {
    /// Hand a commit's outcomes to the event loop; false once nobody is left to answer.
    fn publish(&mut self, mut finished: FinishedCommit) -> bool {
        finished.seconds = finished.started.elapsed().as_secs_f64();
        self.results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(finished);
        // A full socket already wakes the reader, which takes every finished commit at once;
        // a closed one means nobody is left to answer.
        match self.notify.write(&[1]) {
            Err(err) => matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted),
            Ok(written) => written == 1,
        }
    }

    /// Publish `commit` once a flush has made it durable: a failed one turns its outcomes into
    /// the store's error (its rows may still be stored, and a retry is deduplicated by uuid).
    fn publish_synced(&mut self, store: &Store, mut commit: FinishedCommit) -> bool {
        let syncing = Instant::now();
        if let Err(err) = store.sync() {
            commit.outcomes = Err(err);
        }
        commit.sync_seconds += syncing.elapsed().as_secs_f64();
        self.publish(commit)
    }
}

fn run(
    store: &Store,
    limits: CommitLimits,
    queue: &Receiver<Job>,
    results: &Mutex<Vec<FinishedCommit>>,
    notify: UnixStream,
) {
    let mut outcomes = Outcomes { results, notify };
    // The last commit, stored but not yet known to be on disk: its requests are answered when
    // the next commit has flushed the file, or when nothing else is queued and a sync has.
    let mut unsynced: Option<FinishedCommit> = None;
    loop {
        let first = if let Some(last) = unsynced.take() {
            match queue.try_recv() {
                Ok(job) => {
                    unsynced = Some(last);
                    job
                }
                Err(waiting) => {
                    if !outcomes.publish_synced(store, last) || waiting == TryRecvError::Disconnected {
                        return;
                    }
                    continue;
                }
            }
        } else {
            match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let finished = commit_queued(store, limits, first, queue);
        let answered = match (&finished.outcomes, unsynced.take()) {
            // Its flush took the meta page of the commit before it to disk.
            (Ok(_), before) => {
                unsynced = Some(finished);
                before.is_none_or(|before| outcomes.publish(before))
            }
            (Err(err), before) => {
                let before_answered = before.is_none_or(|mut before| {
                    if matches!(err, CoreError::OutboxFull { .. }) {
                        // Refused before writing anything: the commit before is synced on its own.
                        outcomes.publish_synced(store, before)
                    } else {
                        // It may have failed flushing the file, the meta page of the commit
                        // before included; a flush error is reported once, so a sync now could
                        // succeed without that page on disk. Its requests are refused too, and
                        // their retries are deduplicated by uuid.
                        before.outcomes = Err(CoreError::Store(format!(
                            "the store could not confirm this commit was written: the next one failed ({err})"
                        )));
                        outcomes.publish(before)
                    }
                });
                before_answered && outcomes.publish(finished)
            }
        };
        if !answered {
            break;
        }
    }
    // Nobody is left to answer; what was stored still goes to disk.
    if unsynced.is_some() {
        let _ = store.sync();
    }
}

/// Commit `first` and everything queued behind it once the store's write lock is held.
fn commit_queued(store: &Store, limits: CommitLimits, first: Job, queue: &Receiver<Job>) -> FinishedCommit {
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
    let outcomes = refusing_panics(|| store.commit_unsynced(gather, options));
    FinishedCommit {
        tickets,
        outcomes,
        // Known once the commit is durable, when it is published.
        seconds: 0.0,
        sync_seconds: store.last_sync().as_secs_f64(),
        started,
    }
}

#[cfg(test)]
#[path = "commit_thread_tests.rs"]
mod tests;
