//! `Store` and `OutboxChunk`: the durable outbox as Python sees it.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::errors::PyCoreError;
use super::ingest::{time_from, PyBatch};
use crate::core::columns;
use crate::core::row::{EventRow, OutboxRecord};
use crate::core::store::{CommitOptions, Store, StoreConfig};

#[pyclass(name = "Store", module = "hogflare._hogflare", frozen)]
pub struct PyStore {
    inner: Store,
    #[pyo3(get)]
    path: PathBuf,
}

#[pymethods]
impl PyStore {
    #[new]
    #[pyo3(signature = (path, *, map_size=None, max_readers=None))]
    fn new(py: Python<'_>, path: PathBuf, map_size: Option<usize>, max_readers: Option<u32>) -> PyResult<Self> {
        let defaults = StoreConfig::default();
        let config = StoreConfig {
            map_size: map_size.unwrap_or(defaults.map_size),
            max_readers: max_readers.unwrap_or(defaults.max_readers),
        };
        let inner = py.detach(|| Store::open(&path, &config)).map_err(PyCoreError::from)?;
        Ok(Self { inner, path })
    }

    /// Commit the batches in one synced transaction; returns `(stored, duplicates)` per batch.
    #[pyo3(signature = (batches, *, dedupe_window_days, max_outbox_bytes, now=None))]
    #[allow(clippy::needless_pass_by_value)] // pyo3 extracts arguments as owned values
    fn commit(
        &self,
        py: Python<'_>,
        batches: Vec<PyRef<'_, PyBatch>>,
        dedupe_window_days: u32,
        max_outbox_bytes: u64,
        now: Option<f64>,
    ) -> PyResult<Vec<(u32, u32)>> {
        let decoded = batches
            .iter()
            .map(|batch| batch.take())
            .collect::<Result<Vec<_>, _>>()?;
        let options = CommitOptions {
            dedupe_window_days,
            max_outbox_bytes,
            now: time_from(now),
        };
        let outcomes = py
            .detach(|| self.inner.commit(decoded, options))
            .map_err(PyCoreError::from)?;
        Ok(outcomes.into_iter().map(|o| (o.stored, o.duplicates)).collect())
    }

    /// `(next_seq, rows, bytes)` of the outbox.
    fn outbox_state(&self) -> PyResult<(u64, u64, u64)> {
        let state = self.inner.outbox_state().map_err(PyCoreError::from)?;
        Ok((state.next_seq, state.rows, state.bytes))
    }

    #[pyo3(signature = (after, *, max_rows, max_bytes))]
    fn read_outbox(&self, py: Python<'_>, after: u64, max_rows: usize, max_bytes: u64) -> PyResult<PyOutboxChunk> {
        let chunk = py
            .detach(|| self.inner.read_outbox(after, max_rows, max_bytes))
            .map_err(PyCoreError::from)?;
        Ok(PyOutboxChunk {
            last_seq: chunk.last_seq,
            size: chunk.bytes,
            records: chunk.records,
        })
    }

    fn trim_outbox(&self, py: Python<'_>, upto: u64) -> PyResult<u64> {
        Ok(py.detach(|| self.inner.trim_outbox(upto)).map_err(PyCoreError::from)?)
    }

    fn cursor(&self, sink: &str) -> PyResult<Option<u64>> {
        Ok(self.inner.cursor(sink).map_err(PyCoreError::from)?)
    }

    fn set_cursor(&self, sink: &str, seq: u64) -> PyResult<()> {
        Ok(self.inner.set_cursor(sink, seq).map_err(PyCoreError::from)?)
    }

    #[pyo3(signature = (*, window_days, limit, now=None))]
    fn expire_seen(&self, py: Python<'_>, window_days: u32, limit: usize, now: Option<f64>) -> PyResult<usize> {
        let now = time_from(now);
        Ok(py
            .detach(|| self.inner.expire_seen(now, window_days, limit))
            .map_err(PyCoreError::from)?)
    }

    fn check(&self) -> PyResult<()> {
        Ok(self.inner.check().map_err(PyCoreError::from)?)
    }
}

/// Rows read from the outbox; their columns are built on request.
#[pyclass(name = "OutboxChunk", module = "hogflare._hogflare", frozen)]
pub struct PyOutboxChunk {
    #[pyo3(get)]
    last_seq: u64,
    #[pyo3(get)]
    size: u64,
    records: Vec<(u64, OutboxRecord)>,
}

#[pymethods]
impl PyOutboxChunk {
    fn __len__(&self) -> usize {
        self.records.len()
    }

    /// The event rows with a sequence number above `after`, as an Arrow IPC stream, or `None`.
    #[pyo3(signature = (after=0))]
    fn events_ipc<'py>(&self, py: Python<'py>, after: u64) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let rows: Vec<&EventRow> = self
            .records
            .iter()
            .filter(|(seq, _)| *seq > after)
            .map(|(_, record)| match record {
                OutboxRecord::Event(row) => row,
            })
            .collect();
        if rows.is_empty() {
            return Ok(None);
        }
        let ipc = py
            .detach(|| columns::event_batch(&rows).and_then(|batch| columns::to_ipc(&batch)))
            .map_err(PyCoreError::from)?;
        Ok(Some(PyBytes::new(py, &ipc)))
    }
}
