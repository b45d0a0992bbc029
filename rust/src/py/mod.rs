//! Python bindings only: conversions, `#[pyclass]` wrappers and exception mapping.

mod commit;
mod errors;
mod exceptions;
mod flags;
mod geoip;
mod ingest;
mod lake;
mod outbox;
mod signing;
mod store;
mod store_flags;
mod token;

use pyo3::prelude::*;

/// The store commit decodes, updates and re-encodes persons under LMDB's single writer, so its
/// many short-lived allocations are serialised across every worker; mimalloc serves them in
/// about two thirds of the instructions glibc's allocator needs. Python's own objects still
/// come from Python's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<ingest::PyDecoder>()?;
    m.add_class::<ingest::PyBatch>()?;
    m.add_class::<store::PyStore>()?;
    m.add_class::<store_flags::HashKeyOverrideWrite>()?;
    m.add_class::<commit::PyCommitThread>()?;
    m.add_class::<commit::Finished>()?;
    m.add_class::<outbox::PyExport>()?;
    m.add_class::<outbox::PyPipelineChunk>()?;
    m.add_class::<flags::PyFlagSet>()?;
    m.add_class::<geoip::PyGeoIp>()?;
    m.add_class::<signing::PySignatureVerifier>()?;
    m.add_function(wrap_pyfunction!(lake::rewrite_parquet, m)?)?;
    m.add_function(wrap_pyfunction!(token::project_token, m)?)?;
    m.add("HogflareError", py.get_type::<exceptions::HogflareError>())?;
    m.add("PayloadError", py.get_type::<exceptions::PayloadError>())?;
    m.add(
        "PayloadTooLargeError",
        py.get_type::<exceptions::PayloadTooLargeError>(),
    )?;
    m.add("NoValidEventError", py.get_type::<exceptions::NoValidEventError>())?;
    m.add("AuthError", py.get_type::<exceptions::AuthError>())?;
    m.add("StorageError", py.get_type::<exceptions::StorageError>())?;
    m.add("OutboxFullError", py.get_type::<exceptions::OutboxFullError>())?;
    m.add(
        "UNMEASURED_COLUMNS",
        pyo3::types::PyTuple::new(py, crate::core::columns::JSON_COLUMNS)?,
    )?;
    Ok(())
}
