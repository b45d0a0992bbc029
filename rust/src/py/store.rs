//! `Store` and `OutboxChunk`: the durable outbox as Python sees it.

use std::path::PathBuf;

use pyo3::prelude::*;

use super::errors::PyCoreError;
use super::ingest::{time_from, PyBatch};
use crate::core::export;
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

    /// Write the events after `after` to Parquet files under `data_dir`, one per day; rows at or
    /// below `skip_upto` are already in the lake and are left out.
    #[pyo3(signature = (after, *, skip_upto, max_rows, max_bytes, data_dir))]
    #[allow(clippy::needless_pass_by_value)] // pyo3 extracts arguments as owned values
    fn export_events(
        &self,
        py: Python<'_>,
        after: u64,
        skip_upto: u64,
        max_rows: usize,
        max_bytes: u64,
        data_dir: PathBuf,
    ) -> PyResult<PyExport> {
        let export = py
            .detach(|| export::export_events(&self.inner, after, skip_upto, max_rows, max_bytes, &data_dir))
            .map_err(PyCoreError::from)?;
        Ok(PyExport {
            entries: export.entries,
            last_seq: export.last_seq,
            files: export
                .files
                .into_iter()
                .map(|file| {
                    (
                        file.day,
                        file.path.to_string_lossy().into_owned(),
                        file.rows,
                        file.bytes,
                    )
                })
                .collect(),
        })
    }

    #[pyo3(signature = (upto, *, limit=10_000))]
    fn trim_outbox(&self, py: Python<'_>, upto: u64, limit: usize) -> PyResult<u64> {
        Ok(py
            .detach(|| self.inner.trim_outbox(upto, limit))
            .map_err(PyCoreError::from)?)
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

/// What `Store.export_events` did.
#[pyclass(name = "Export", module = "hogflare._hogflare", frozen)]
pub struct PyExport {
    /// Outbox entries read.
    #[pyo3(get)]
    entries: u64,
    /// The outbox position the export reached.
    #[pyo3(get)]
    last_seq: u64,
    /// `(day, path, rows, bytes)` of each file written; `day` counts days since 1970-01-01.
    #[pyo3(get)]
    files: Vec<(i32, String, u64, u64)>,
}
