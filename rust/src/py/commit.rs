//! `CommitThread`: the store's writer, run by a thread that never takes the GIL (see
//! `core::commit_thread`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::errors::PyCoreError;
use super::ingest::PyBatch;
use super::store::PyStore;
use crate::core::commit_thread::{CommitLimits, CommitThread, FinishedCommit};
use crate::core::error::CoreError;
use crate::core::store::CommitOutcome;

/// `(stored, duplicates, warnings)` of one request.
pub(crate) type RequestOutcome = (u32, u32, BTreeMap<&'static str, u32>);

#[pyclass(name = "CommitThread", module = "hogflare._hogflare", frozen)]
pub struct PyCommitThread {
    inner: CommitThread,
}

#[pymethods]
impl PyCommitThread {
    #[new]
    #[pyo3(signature = (store, *, dedupe_window_days, max_outbox_bytes))]
    #[allow(clippy::needless_pass_by_value)] // pyo3 extracts arguments as owned values
    fn new(store: PyRef<'_, PyStore>, dedupe_window_days: u32, max_outbox_bytes: u64) -> PyResult<Self> {
        let limits = CommitLimits {
            dedupe_window_days,
            max_outbox_bytes,
        };
        let inner = CommitThread::start(Arc::clone(&store.inner), limits).map_err(PyCoreError::from)?;
        Ok(Self { inner })
    }

    /// Queue a batch for the next commit; returns the ticket its outcome will carry.
    #[allow(clippy::needless_pass_by_value)] // pyo3 extracts arguments as owned values
    fn submit(&self, batch: PyRef<'_, PyBatch>) -> PyResult<u64> {
        Ok(self.inner.submit(batch.take()?).map_err(PyCoreError::from)?)
    }

    /// The socket that becomes readable when a commit has finished.
    fn fileno(&self) -> i32 {
        self.inner.wake_fd()
    }

    /// The commits finished since the last call, oldest first.
    fn finished(&self) -> Vec<Finished> {
        self.inner.finished().into_iter().map(Finished::from).collect()
    }

    /// Finish the commits queued, then stop the thread, waiting at most `timeout` seconds when
    /// given: whether the thread has ended.
    #[pyo3(signature = (timeout=None))]
    fn stop(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let limit = timeout
            .map(Duration::try_from_secs_f64)
            .transpose()
            .map_err(|err| PyValueError::new_err(format!("timeout: {err}")))?;
        Ok(py.detach(|| self.inner.stop_within(limit)))
    }
}

/// One finished commit, as Python reads it.
#[pyclass(name = "FinishedCommit", module = "hogflare._hogflare", frozen)]
pub struct Finished {
    /// Taken by the first call of `outcomes`, which raises the commit's error if it failed.
    outcomes: Mutex<Option<Result<Vec<CommitOutcome>, CoreError>>>,
    /// The tickets of the batches committed, in the order of `outcomes`.
    #[pyo3(get)]
    tickets: Vec<u64>,
    #[pyo3(get)]
    seconds: f64,
    #[pyo3(get)]
    sync_seconds: f64,
}

impl From<FinishedCommit> for Finished {
    fn from(finished: FinishedCommit) -> Self {
        Self {
            outcomes: Mutex::new(Some(finished.outcomes)),
            tickets: finished.tickets,
            seconds: finished.seconds,
            sync_seconds: finished.sync_seconds,
        }
    }
}

#[pymethods]
impl Finished {
    /// `(stored, duplicates, warnings)` per ticket; raises
    /// `OutboxFullError` or `StorageError` when nothing was stored.
    fn outcomes(&self) -> PyResult<Vec<RequestOutcome>> {
        let taken = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner).take();
        let outcomes = taken
            .unwrap_or(Err(CoreError::AlreadyCommitted))
            .map_err(PyCoreError::from)?;
        Ok(outcomes.iter().map(request_outcome).collect())
    }
}

pub(crate) fn request_outcome(outcome: &CommitOutcome) -> RequestOutcome {
    let warnings = outcome.warnings.iter().map(|(w, n)| (w.as_str(), *n)).collect();
    (outcome.stored, outcome.duplicates, warnings)
}
