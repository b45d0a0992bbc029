//! `SignatureVerifier`: the request-signing check, one call per request body.

use pyo3::prelude::*;

use super::errors::PyCoreError;
use crate::core::signing::{SignatureHeaders, Verifier};

/// Bodies above this size are hashed with the GIL released; below it, handing the GIL over
/// costs more than the hashing.
const DETACH_BYTES: usize = 256 * 1024;

#[pyclass(name = "SignatureVerifier", module = "hogflare._hogflare", frozen)]
pub struct PySignatureVerifier {
    inner: Verifier,
}

#[pymethods]
impl PySignatureVerifier {
    #[new]
    #[pyo3(signature = (secret, *, tolerance_secs=None))]
    fn new(secret: &[u8], tolerance_secs: Option<u64>) -> Self {
        Self {
            inner: Verifier::new(secret, tolerance_secs),
        }
    }

    /// Raise `AuthError` unless a signature header carries a valid HMAC of `body`.
    #[pyo3(signature = (body, *, posthog_signature=None, hub_signature=None, timestamp=None, now=None))]
    fn verify(
        &self,
        py: Python<'_>,
        body: &[u8],
        posthog_signature: Option<&str>,
        hub_signature: Option<&str>,
        timestamp: Option<&str>,
        now: Option<f64>,
    ) -> PyResult<()> {
        let headers = SignatureHeaders {
            posthog: posthog_signature,
            hub: hub_signature,
            timestamp,
        };
        let now = super::ingest::time_from(now).timestamp();
        let work = || self.inner.verify(headers, body, now);
        let verified = if body.len() > DETACH_BYTES {
            py.detach(work)
        } else {
            work()
        };
        verified.map_err(|err| PyCoreError::from(err).into())
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.inner)
    }
}
