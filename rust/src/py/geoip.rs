//! `GeoIpDatabase`: the GeoIP files opened once for the flags service, which locates the
//! request's address as PostHog's does (capture's `Decoder` opens its own).

use std::path::PathBuf;

use pyo3::prelude::*;

use super::errors::PyCoreError;
use crate::core::geoip::GeoIp;

#[pyclass(name = "GeoIpDatabase", module = "hogflare._hogflare", frozen)]
pub struct PyGeoIp {
    pub inner: GeoIp,
}

#[pymethods]
impl PyGeoIp {
    /// Map the MaxMind DB files (`HOGFLARE_GEOIP_DB`, or the packaged ones), asked in order.
    #[new]
    #[allow(clippy::needless_pass_by_value)] // pyo3 extracts owned values
    fn new(paths: Vec<PathBuf>) -> PyResult<Self> {
        Ok(Self {
            inner: GeoIp::open(&paths).map_err(PyCoreError::from)?,
        })
    }
}
