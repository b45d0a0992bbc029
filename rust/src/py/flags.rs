//! `FlagSet`: the compiled flags as Python sees them; evaluation is one call into the core.

use std::collections::BTreeMap;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::ingest::time_from;
use crate::core::flags::{FlagSet, Request, Shape, Stored};

/// Past this many flags an evaluation may take long enough to be worth releasing the GIL for.
/// Below it (tens of microseconds), releasing it only hands it to Granian's threads and makes
/// the event loop wait to take it back: the benchmark's 50 flags answered ~8 % faster held.
const DETACH_FLAGS: usize = 200;

#[pyclass(name = "FlagSet", module = "hogflare._hogflare", frozen)]
pub struct PyFlagSet {
    inner: FlagSet,
}

#[pymethods]
impl PyFlagSet {
    /// Compile Hogflare's `HOGFLARE_FEATURE_FLAGS` text and a flags file's text; returns the set
    /// and one message per problem (the flags without problems are all in the set).
    #[staticmethod]
    #[pyo3(signature = (hogflare=None, definitions=None))]
    fn compile(py: Python<'_>, hogflare: Option<&str>, definitions: Option<&str>) -> (Self, Vec<String>) {
        let (inner, problems) = py.detach(|| FlagSet::compile(hogflare, definitions));
        (Self { inner }, problems)
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn keys(&self) -> Vec<String> {
        self.inner.keys().map(str::to_owned).collect()
    }

    fn has_active_flags(&self) -> bool {
        self.inner.has_active_flags()
    }

    fn group_type_mapping(&self) -> BTreeMap<String, String> {
        self.inner
            .group_type_mapping()
            .iter()
            .map(|(index, name)| (index.to_string(), name.clone()))
            .collect()
    }

    /// PostHog's local-evaluation document (JSON) for the flags the SDKs can evaluate.
    fn definitions<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.definitions_json().as_bytes())
    }

    /// The whole `/flags` or `/decide` answer for one user, in the shape the route and its `v`
    /// ask for. The stored properties are overridden by the request's, and `distinct_id` joins
    /// the person's. `evaluate=False` answers with no flags (a GET, or `disable_flags`). Without
    /// a `request_id`, a new UUID is the answer's `requestId`.
    #[pyo3(signature = (distinct_id, *, request_id=None, decide=false, version=None, evaluate=true, stored_person=None, stored_groups=None, person_properties="{}", groups="{}", group_properties="{}", anon_distinct_id=None, device_id=None, flag_keys=None, environments=None, now=None))]
    #[allow(clippy::too_many_arguments, clippy::needless_pass_by_value)] // pyo3 extracts owned values
    fn respond<'py>(
        &self,
        py: Python<'py>,
        distinct_id: &str,
        request_id: Option<&str>,
        decide: bool,
        version: Option<i64>,
        evaluate: bool,
        stored_person: Option<&str>,
        stored_groups: Option<&str>,
        person_properties: &str,
        groups: &str,
        group_properties: &str,
        anon_distinct_id: Option<&str>,
        device_id: Option<&str>,
        flag_keys: Option<Vec<String>>,
        environments: Option<Vec<String>>,
        now: Option<f64>,
    ) -> Bound<'py, PyBytes> {
        let request = Request {
            distinct_id,
            person_properties,
            groups,
            group_properties,
            anon_distinct_id,
            device_id,
            flag_keys: flag_keys.as_deref(),
            environments: environments.as_deref(),
            stored: Some(Stored {
                person: stored_person,
                groups: stored_groups,
            }),
        };
        let now = time_from(now);
        let shape = Shape::for_request(decide, version);
        let work = || {
            let results = if evaluate {
                self.inner.evaluate(&request, now)
            } else {
                Vec::new()
            };
            let generated;
            let request_id = if let Some(id) = request_id {
                id
            } else {
                generated = uuid::Uuid::new_v4().to_string();
                &generated
            };
            self.inner.respond(&results, shape, request_id, now.timestamp_millis())
        };
        let body = if evaluate && self.inner.len() > DETACH_FLAGS {
            py.detach(work)
        } else {
            work()
        };
        PyBytes::new(py, body.as_bytes())
    }
}
