//! `Store`: the durable store as Python sees it, committing requests and reading the outbox,
//! persons and groups back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::commit::{request_outcome, RequestOutcome};
use super::errors::PyCoreError;
use super::ingest::{time_from, PyBatch};
use super::outbox::{PyExport, PyPipelineChunk};
use super::store_flags::HashKeyOverrides;
use crate::core::commit_thread::commit_or_refuse;
use crate::core::export::{self, Destination};
use crate::core::groups::MAX_GROUP_TYPES;
use crate::core::pipeline;
use crate::core::store::{CommitOptions, ContinuityIds, Store, StoreConfig};
use crate::core::timestamp;

#[pyclass(name = "Store", module = "hogflare._hogflare", frozen)]
pub struct PyStore {
    /// Shared with the commit thread (see `CommitThread`).
    pub(crate) inner: Arc<Store>,
    #[pyo3(get)]
    path: PathBuf,
}

#[pymethods]
impl PyStore {
    #[new]
    #[pyo3(signature = (path, *, map_size=None, max_readers=None, group_types=None, compress_outbox=false))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        map_size: Option<usize>,
        max_readers: Option<u32>,
        group_types: Option<Vec<Option<String>>>,
        compress_outbox: bool,
    ) -> PyResult<Self> {
        let defaults = StoreConfig::default();
        let mut fixed: [Option<String>; MAX_GROUP_TYPES] = Default::default();
        for (slot, group_type) in group_types
            .unwrap_or_default()
            .into_iter()
            .take(MAX_GROUP_TYPES)
            .enumerate()
        {
            fixed[slot] = group_type.filter(|name| !name.is_empty());
        }
        let config = StoreConfig {
            map_size: map_size.unwrap_or(defaults.map_size),
            max_readers: max_readers.unwrap_or(defaults.max_readers),
            group_types: fixed,
            compress_outbox,
            ..StoreConfig::default()
        };
        let inner = py.detach(|| Store::open(&path, &config)).map_err(PyCoreError::from)?;
        Ok(Self {
            inner: Arc::new(inner),
            path,
        })
    }

    /// The store's id (a uuid), chosen when it was created.
    #[getter]
    fn id(&self) -> String {
        self.inner.id().to_string()
    }

    /// Commit the batches in one synced transaction; returns `(stored, duplicates, warnings)` per
    /// batch, `warnings` counting person and group updates that could not be done as asked.
    #[pyo3(signature = (batches, *, dedupe_window_days, max_outbox_bytes, now=None))]
    #[allow(clippy::needless_pass_by_value)] // pyo3 extracts arguments as owned values
    fn commit(
        &self,
        py: Python<'_>,
        batches: Vec<PyRef<'_, PyBatch>>,
        dedupe_window_days: u32,
        max_outbox_bytes: u64,
        now: Option<f64>,
    ) -> PyResult<Vec<RequestOutcome>> {
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
            .detach(|| commit_or_refuse(&self.inner, || decoded, options))
            .map_err(PyCoreError::from)?;
        Ok(outcomes.iter().map(request_outcome).collect())
    }

    /// `(next_seq, rows, bytes)` of the outbox.
    fn outbox_state(&self) -> PyResult<(u64, u64, u64)> {
        let state = self.inner.outbox_state().map_err(PyCoreError::from)?;
        Ok((state.next_seq, state.rows, state.bytes))
    }

    /// The number of the dictionary new outbox entries are compressed with; `None` until the
    /// store has made its first.
    fn outbox_dictionary(&self) -> PyResult<Option<u32>> {
        Ok(self.inner.outbox_dictionary().map_err(PyCoreError::from)?)
    }

    /// `(persons, distinct_ids, groups)` over every project, from LMDB's statistics (no scan).
    fn counts(&self) -> PyResult<(u64, u64, u64)> {
        let counts = self.inner.counts().map_err(PyCoreError::from)?;
        Ok((counts.persons, counts.distinct_ids, counts.groups))
    }

    /// When the oldest outbox row after `after` reached the store (epoch seconds), or `None`.
    fn pending_since(&self, after: u64) -> PyResult<Option<f64>> {
        let since = self.inner.pending_since(after).map_err(PyCoreError::from)?;
        Ok(since.map(|micros| micros as f64 / 1e6))
    }

    /// Seconds the last `commit` spent writing and syncing its transaction.
    fn last_sync_secs(&self) -> f64 {
        self.inner.last_sync().as_secs_f64()
    }

    /// Write the outbox entries after `after` to Parquet files, one or more per table and day,
    /// under each table's directory, on up to `writers` threads (`None` or 0: one per core, at
    /// most four); entries at or below a table's `*_upto` are already in it and are left out.
    #[pyo3(signature = (after, *, events_upto, persons_upto, max_rows, max_bytes, events_dir, persons_dir, writers=None))]
    #[allow(clippy::too_many_arguments, clippy::needless_pass_by_value)] // pyo3 extracts owned values
    fn export(
        &self,
        py: Python<'_>,
        after: u64,
        events_upto: u64,
        persons_upto: u64,
        max_rows: usize,
        max_bytes: u64,
        events_dir: PathBuf,
        persons_dir: PathBuf,
        writers: Option<usize>,
    ) -> PyResult<PyExport> {
        let writers = writers
            .filter(|&writers| writers > 0)
            .unwrap_or_else(export::default_writers);
        let to = Destination {
            events_dir: &events_dir,
            events_upto,
            persons_dir: &persons_dir,
            persons_upto,
        };
        let export = py
            .detach(|| export::export(&self.inner, after, max_rows, max_bytes, &to, writers))
            .map_err(PyCoreError::from)?;
        Ok(PyExport::from(export))
    }

    /// The outbox entries after `after` as Cloudflare Pipelines POST bodies: JSON arrays of at
    /// most `max_body_bytes`, event rows and person snapshot rows (only when `persons`) apart,
    /// each stream's bodies sorted into at most `lanes` lanes by distinct id or person.
    #[pyo3(signature = (after, *, max_rows, max_bytes, max_body_bytes, lanes, persons))]
    #[allow(clippy::too_many_arguments)]
    fn pipeline(
        &self,
        py: Python<'_>,
        after: u64,
        max_rows: usize,
        max_bytes: u64,
        max_body_bytes: usize,
        lanes: usize,
        persons: bool,
    ) -> PyResult<PyPipelineChunk> {
        let limits = pipeline::BodyLimits {
            max_body_bytes,
            lanes,
            persons,
        };
        let chunk = py
            .detach(|| pipeline::pipeline(&self.inner, after, max_rows, max_bytes, limits))
            .map_err(PyCoreError::from)?;
        Ok(PyPipelineChunk::new(py, chunk))
    }

    /// All the properties of the person a distinct id belongs to, as JSON object text, or `None`.
    ///
    /// Read with the GIL held, as `group_properties`: an LMDB read never waits for a writer and
    /// takes microseconds, less than giving the GIL to another thread and taking it back.
    pub(crate) fn person_properties(&self, token: &str, distinct_id: &str) -> PyResult<Option<String>> {
        let person = self.inner.person(Some(token), distinct_id).map_err(PyCoreError::from)?;
        Ok(person.map(|person| person.properties_json()))
    }

    /// Experience continuity's hash keys stored for the person a distinct id belongs to,
    /// `{flag key: hash key}`.
    fn hash_keys(&self, token: &str, distinct_id: &str) -> PyResult<HashKeyOverrides> {
        let ids = ContinuityIds {
            token,
            distinct_id,
            anon_distinct_id: None,
        };
        let found = self.inner.hash_key_overrides(&ids, &[]).map_err(PyCoreError::from)?;
        Ok(found.overrides)
    }

    /// `{type: properties}` JSON for the groups `{type: key}` (JSON text) names; a group never
    /// identified reads as `{}`.
    pub(crate) fn group_properties(&self, token: &str, groups: &str) -> PyResult<String> {
        let named: BTreeMap<String, sonic_rs::Value> = sonic_rs::from_str(groups).unwrap_or_default();
        let pairs: Vec<(String, String)> = named
            .into_iter()
            .filter_map(|(group_type, key)| {
                let key = sonic_rs::JsonValueTrait::as_str(&key).map_or_else(|| key.to_string(), str::to_owned);
                (!key.is_empty()).then_some((group_type, key))
            })
            .collect();
        Ok(self.inner.group_properties(token, &pairs).map_err(PyCoreError::from)?)
    }

    /// `(project token, stored group type, its slot)` for each stored group type the configured
    /// `group_types` contradict (the type's name is `None` when too long to have been kept).
    fn group_type_conflicts(&self) -> PyResult<Vec<(String, Option<String>, u8)>> {
        let conflicts = self.inner.group_type_conflicts().map_err(PyCoreError::from)?;
        Ok(conflicts
            .into_iter()
            .map(|(token, conflict)| (token, conflict.group_type, conflict.slot))
            .collect())
    }

    /// The person a distinct id belongs to in the project of `token` (any project when `None`),
    /// or `None`. `properties` and `properties_set_once` are JSON text.
    #[pyo3(signature = (token, distinct_id))]
    fn person<'py>(
        &self,
        py: Python<'py>,
        token: Option<&str>,
        distinct_id: &str,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(person) = self.inner.person(token, distinct_id).map_err(PyCoreError::from)? else {
            return Ok(None);
        };
        let record = PyDict::new(py);
        record.set_item("id", person.id)?;
        record.set_item("uuid", person.uuid.hyphenated().to_string())?;
        record.set_item(
            "created_at",
            timestamp::format_rfc3339(timestamp::from_micros(person.created_at)),
        )?;
        record.set_item("version", person.version)?;
        record.set_item("is_identified", person.is_identified)?;
        record.set_item("distinct_ids", person.distinct_ids.clone())?;
        record.set_item("properties", person.set_json())?;
        record.set_item("properties_set_once", person.set_once_json())?;
        Ok(Some(record))
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

    /// A write: it may wait for a worker's commit, so other threads run meanwhile.
    fn set_cursor(&self, py: Python<'_>, sink: &str, seq: u64) -> PyResult<()> {
        Ok(py
            .detach(|| self.inner.set_cursor(sink, seq))
            .map_err(PyCoreError::from)?)
    }

    fn first_position(&self) -> PyResult<u64> {
        Ok(self.inner.first_position().map_err(PyCoreError::from)?)
    }

    /// Number the next rows after `past` unless the outbox is already beyond it.
    fn advance_outbox(&self, py: Python<'_>, past: u64) -> PyResult<bool> {
        Ok(py
            .detach(|| self.inner.advance_outbox(past))
            .map_err(PyCoreError::from)?)
    }

    #[pyo3(signature = (*, window_days, limit, now=None))]
    fn expire_seen(&self, py: Python<'_>, window_days: u32, limit: usize, now: Option<f64>) -> PyResult<usize> {
        let now = time_from(now);
        Ok(py
            .detach(|| self.inner.expire_seen(now, window_days, limit))
            .map_err(PyCoreError::from)?)
    }

    /// Forget cookieless mode's salts of days no longer in use, with what was made with them,
    /// and make the salts of the days in use.
    #[pyo3(signature = (*, now=None))]
    fn maintain_cookieless(&self, py: Python<'_>, now: Option<f64>) -> PyResult<usize> {
        let now = time_from(now);
        Ok(py
            .detach(|| self.inner.maintain_cookieless(now))
            .map_err(PyCoreError::from)?)
    }

    fn check(&self) -> PyResult<()> {
        Ok(self.inner.check().map_err(PyCoreError::from)?)
    }
}
