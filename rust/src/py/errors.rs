//! Core errors to Python exceptions: one exhaustive match, so every new variant needs a decision.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::types::PyAnyMethods;
use pyo3::{PyErr, Python};

use super::exceptions::{
    AuthError, NoValidEventError, OutboxFullError, PayloadError, PayloadTooLargeError, StorageError,
};
use crate::core::error::CoreError;

pub struct PyCoreError(pub CoreError);

impl From<CoreError> for PyCoreError {
    fn from(err: CoreError) -> Self {
        Self(err)
    }
}

impl From<PyCoreError> for PyErr {
    fn from(PyCoreError(err): PyCoreError) -> Self {
        let message = err.to_string();
        match err {
            CoreError::EmptyPayload
            | CoreError::Decompression { .. }
            | CoreError::InvalidForm(_)
            | CoreError::InvalidJson(_)
            | CoreError::InvalidShape(_)
            | CoreError::EmptyBatch => PayloadError::new_err(message),
            CoreError::NoValidEvent { dropped, token } => {
                let err = NoValidEventError::new_err(message);
                Python::attach(|py| {
                    let counts: std::collections::BTreeMap<&str, u32> = dropped.into_iter().collect();
                    // Only a failing allocation could refuse them; the error stands without them.
                    let _ = err.value(py).setattr("dropped", counts);
                    let _ = err.value(py).setattr("token", token);
                });
                err
            }
            CoreError::PayloadTooLarge { .. } => PayloadTooLargeError::new_err(message),
            CoreError::NoToken
            | CoreError::MultipleTokens
            | CoreError::InvalidToken(_)
            | CoreError::UnknownToken
            | CoreError::MissingSignature
            | CoreError::SignatureMismatch
            | CoreError::MissingSignatureTimestamp
            | CoreError::SignatureTimestampOutOfRange => AuthError::new_err(message),
            CoreError::OutboxFull { .. } => OutboxFullError::new_err(message),
            CoreError::Store(_) | CoreError::Encoding(_) | CoreError::LakeFile(_) => StorageError::new_err(message),
            CoreError::AlreadyCommitted => PyRuntimeError::new_err(message),
            CoreError::GeoIpDatabase { .. } => PyValueError::new_err(message),
        }
    }
}
