//! `FlagSet`: the compiled flags as Python sees them; evaluation is one call with the GIL released.

use std::collections::BTreeMap;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::ingest::time_from;
use crate::core::flags::{FlagSet, Request};

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

    /// Every flag for one user, as JSON `{"flags": {...}, "errorsWhileComputingFlags": bool}`.
    #[pyo3(signature = (distinct_id, *, person_properties="{}", groups="{}", group_properties="{}", anon_distinct_id=None, device_id=None, flag_keys=None, environments=None, now=None))]
    #[allow(clippy::too_many_arguments, clippy::needless_pass_by_value)] // pyo3 extracts owned values
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        distinct_id: &str,
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
        };
        let now = time_from(now);
        let body = py.detach(|| self.inner.evaluate_json(&request, now));
        PyBytes::new(py, body.as_bytes())
    }
}
