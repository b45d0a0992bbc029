//! `Decoder` and `Batch`: one call per request body, bytes in, one result object out, with the
//! GIL released while Rust works.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::errors::PyCoreError;
use crate::core::cookieless::CookielessMode;
use crate::core::decode::{self, DecodedRequest, DecoderConfig, HeaderFacts};
use crate::core::enrich::Enrichment;
use crate::core::error::CoreError;
use crate::core::geoip::GeoIp;
use crate::core::own_event;
use crate::core::request::{RequestParts, RouteKind};

pub fn time_from(now: Option<f64>) -> DateTime<Utc> {
    now.and_then(|seconds| DateTime::from_timestamp_micros((seconds * 1e6).round() as i64))
        .unwrap_or_else(Utc::now)
}

#[pyclass(name = "Decoder", module = "hogflare._hogflare", frozen)]
pub struct PyDecoder {
    config: DecoderConfig,
}

#[pymethods]
impl PyDecoder {
    /// `geoip_db`: MaxMind DB files to locate events from (opened here, once); none turns GeoIP off.
    #[new]
    #[pyo3(signature = (*, max_inflated_bytes, max_event_bytes, team_id=None, project_tokens=None, geoip_db=None, cookieless_mode="stateful"))]
    fn new(
        max_inflated_bytes: usize,
        max_event_bytes: usize,
        team_id: Option<i64>,
        project_tokens: Option<Vec<String>>,
        geoip_db: Option<Vec<PathBuf>>,
        cookieless_mode: &str,
    ) -> PyResult<Self> {
        let cookieless = CookielessMode::parse(cookieless_mode).ok_or_else(|| {
            PyValueError::new_err(format!(
                "unknown cookieless mode {cookieless_mode:?}: stateful, stateless or disabled"
            ))
        })?;
        let project_tokens = project_tokens.map(|tokens| tokens.into_iter().collect::<HashSet<_>>());
        let geoip = match geoip_db {
            Some(paths) if !paths.is_empty() => Some(Arc::new(GeoIp::open(&paths).map_err(PyCoreError::from)?)),
            _ => None,
        };
        Ok(Self {
            config: DecoderConfig {
                team_id,
                project_tokens,
                max_inflated_bytes,
                max_event_bytes,
                geoip,
                cookieless,
            },
        })
    }

    /// `client_ip` is stored as `$ip`; `geoip_ip` (else `client_ip`) is the address events
    /// without their own `$ip` are located by.
    #[pyo3(signature = (route, body, *, query=None, content_type=None, content_encoding=None, api_key=None, sent_at=None, sdk_info=None, client_ip=None, geoip_ip=None, cf_ray=None, country_code=None, now=None, detach=false))]
    #[allow(clippy::too_many_arguments)]
    fn decode(
        &self,
        py: Python<'_>,
        route: &str,
        body: &[u8],
        query: Option<&[u8]>,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        api_key: Option<&str>,
        sent_at: Option<&str>,
        sdk_info: Option<&str>,
        client_ip: Option<&str>,
        geoip_ip: Option<&str>,
        cf_ray: Option<&str>,
        country_code: Option<&str>,
        now: Option<f64>,
        detach: bool,
    ) -> PyResult<PyBatch> {
        let route =
            RouteKind::parse(route).ok_or_else(|| PyValueError::new_err(format!("unknown route kind {route:?}")))?;
        let parts = RequestParts {
            route,
            body,
            query: query.unwrap_or_default(),
            content_type,
            content_encoding,
        };
        let enrichment = Enrichment {
            client_ip,
            geoip_ip,
            cf_ray,
            country_code,
            locator: None,
        };
        let headers = HeaderFacts {
            api_key,
            sent_at,
            sdk_info,
            enrichment,
        };
        let now = time_from(now);
        // A panic here would be a bug that some input reaches: that input is refused, and the
        // server and the rest of the traffic carry on.
        let work = || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                decode::decode(&parts, headers, &self.config, now)
            }))
            .unwrap_or_else(|_| {
                Err(CoreError::InvalidShape(
                    "the payload could not be decoded (internal error)".into(),
                ))
            })
        };
        // Handing the GIL over and taking it back costs more than decoding a small body; large
        // ones are decoded off the event loop (`detach=True`) with the GIL released.
        let decoded = if detach { py.detach(work) } else { work() };
        let decoded = decoded.map_err(PyCoreError::from)?;
        Ok(PyBatch::new(decoded))
    }

    /// An event hogflare writes itself (an admin route's): its row's `source` is `hogflare`, and
    /// it has no person and no enrichment.
    #[pyo3(signature = (token, event, distinct_id, properties, *, now=None))]
    fn own_event(
        &self,
        token: &str,
        event: &str,
        distinct_id: &str,
        properties: String,
        now: Option<f64>,
    ) -> PyResult<PyBatch> {
        let decoded = own_event::own_event(&self.config, token, event, distinct_id, properties, time_from(now))
            .map_err(PyCoreError::from)?;
        Ok(PyBatch::new(decoded))
    }
}

/// The decoded events of one request, held in Rust until the store commits them.
#[pyclass(name = "Batch", module = "hogflare._hogflare", frozen)]
pub struct PyBatch {
    inner: Mutex<Option<DecodedRequest>>,
    #[pyo3(get)]
    token: String,
    #[pyo3(get)]
    accepted: usize,
    #[pyo3(get)]
    filtered: u32,
    #[pyo3(get)]
    results: Option<String>,
    dropped: BTreeMap<&'static str, u32>,
    warnings: BTreeMap<&'static str, u32>,
}

impl PyBatch {
    fn new(decoded: DecodedRequest) -> Self {
        Self {
            token: decoded.token.clone(),
            accepted: decoded.events.len(),
            filtered: decoded.filtered,
            results: decoded.results.clone(),
            dropped: decoded
                .dropped
                .iter()
                .map(|(reason, count)| (reason.as_str(), *count))
                .collect(),
            warnings: decoded
                .warnings
                .iter()
                .map(|(warning, count)| (warning.as_str(), *count))
                .collect(),
            inner: Mutex::new(Some(decoded)),
        }
    }

    pub fn take(&self) -> Result<DecodedRequest, PyCoreError> {
        self.inner
            .lock()
            .map_err(|_| PyCoreError(CoreError::AlreadyCommitted))?
            .take()
            .ok_or(PyCoreError(CoreError::AlreadyCommitted))
    }
}

#[pymethods]
impl PyBatch {
    /// Items dropped, by reason.
    #[getter]
    fn dropped(&self) -> BTreeMap<&'static str, u32> {
        self.dropped.clone()
    }

    /// Items corrected on the way in, by kind.
    #[getter]
    fn warnings(&self) -> BTreeMap<&'static str, u32> {
        self.warnings.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "Batch(token={:?}, accepted={}, dropped={:?})",
            self.token, self.accepted, self.dropped
        )
    }
}
