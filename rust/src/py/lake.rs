//! The lake's compaction: small files rewritten as one by the core, without the GIL.

use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::errors::PyCoreError;
use crate::core::compaction;
use crate::core::lake_table::Table;

/// Write the rows of `inputs` (Parquet files of `table`), in order, to one new file at `output`
/// with the shipper's writer settings; returns `(rows, bytes)`. Nothing is left at `output` on
/// an error.
#[pyfunction]
pub fn rewrite_parquet(py: Python<'_>, table: &str, inputs: Vec<PathBuf>, output: PathBuf) -> PyResult<(u64, u64)> {
    let table = Table::named(table).ok_or_else(|| PyValueError::new_err(format!("no lake table {table:?}")))?;
    let rewritten = py
        .detach(move || compaction::rewrite(table, &inputs, &output))
        .map_err(PyCoreError::from)?;
    Ok((rewritten.rows, rewritten.bytes))
}
