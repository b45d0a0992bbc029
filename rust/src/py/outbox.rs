//! What the shipper and the Pipelines sink get back from the outbox: the files an export wrote
//! and the POST bodies of a chunk.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::core::export::Export;
use crate::core::pipeline::PipelineChunk;

/// What `Store.export` did.
#[pyclass(name = "Export", module = "hogflare._hogflare", frozen)]
pub struct PyExport {
    /// Outbox positions read, one per row.
    #[pyo3(get)]
    positions: u64,
    /// The outbox position the export reached.
    #[pyo3(get)]
    last_seq: u64,
    /// `(table, day, path, rows, bytes)` of each file written; `day` counts days since 1970-01-01.
    #[pyo3(get)]
    files: Vec<(&'static str, i32, String, u64, u64)>,
}

/// What `Store.pipeline` read: the POST bodies of each stream and the outbox position reached.
#[pyclass(name = "PipelineChunk", module = "hogflare._hogflare", frozen)]
pub struct PyPipelineChunk {
    /// Outbox positions read, one per row.
    #[pyo3(get)]
    positions: u64,
    /// The outbox position the chunk reached.
    #[pyo3(get)]
    last_seq: u64,
    #[pyo3(get)]
    event_rows: u64,
    #[pyo3(get)]
    person_rows: u64,
    /// Rows bigger than the body limit on their own, each sent alone.
    #[pyo3(get)]
    oversized: u64,
    /// Bodies for the events stream, lane by lane.
    #[pyo3(get)]
    events: Vec<Vec<Py<PyBytes>>>,
    /// Bodies for the persons stream, lane by lane.
    #[pyo3(get)]
    persons: Vec<Vec<Py<PyBytes>>>,
}

impl From<Export> for PyExport {
    fn from(export: Export) -> Self {
        Self {
            positions: export.positions,
            last_seq: export.last_seq,
            files: export
                .files
                .into_iter()
                .map(|file| {
                    (
                        file.table.name(),
                        file.day,
                        file.path.to_string_lossy().into_owned(),
                        file.rows,
                        file.bytes,
                    )
                })
                .collect(),
        }
    }
}

impl PyPipelineChunk {
    pub(crate) fn new(py: Python<'_>, chunk: PipelineChunk) -> Self {
        let bytes = |lanes: Vec<Vec<Vec<u8>>>| {
            lanes
                .iter()
                .map(|bodies| bodies.iter().map(|body| PyBytes::new(py, body).unbind()).collect())
                .collect()
        };
        Self {
            positions: chunk.positions,
            last_seq: chunk.last_seq,
            event_rows: chunk.events.rows,
            person_rows: chunk.persons.rows,
            oversized: chunk.events.oversized + chunk.persons.oversized,
            events: bytes(chunk.events.lanes),
            persons: bytes(chunk.persons.lanes),
        }
    }
}
