//! What a `/flags` request reads of the store besides the person and its groups: a cookieless
//! visitor's id and experience continuity's hash keys, and the write that remembers them.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::prelude::*;

use super::errors::PyCoreError;
use super::store::PyStore;
use crate::core::cookieless::CookielessEvent;
use crate::core::flags::{FlagSet, Request};
use crate::core::store::{ContinuityIds, Store};

/// `{flag key: hash key}`
pub(crate) type HashKeyOverrides = HashMap<String, String>;

impl PyStore {
    /// The distinct id a cookieless visitor's events get now. Read with the GIL held, as the
    /// person; the day's salt, when the maintenance has not made it yet, is made without it.
    pub(crate) fn cookieless_id(&self, py: Python<'_>, token: &str, visitor: &CookielessEvent) -> PyResult<String> {
        let stored = self
            .inner
            .stored_cookieless_id(token, visitor)
            .map_err(PyCoreError::from)?;
        match stored {
            Some(id) => Ok(id),
            None => Ok(py
                .detach(|| self.inner.cookieless_id(token, visitor))
                .map_err(PyCoreError::from)?),
        }
    }

    /// Experience continuity's stored hash keys for a `/flags` request, when it evaluates a flag
    /// that keeps them (`None` when none does), read with the GIL held as the properties are;
    /// and, when its anonymous id is to be remembered, the write that does it.
    pub(crate) fn hash_key_overrides(
        &self,
        token: &str,
        request: &Request<'_>,
        flags: &FlagSet,
    ) -> PyResult<(Option<HashKeyOverrides>, Option<HashKeyOverrideWrite>)> {
        let keys = flags.continuity_keys(request);
        if keys.is_empty() {
            return Ok((None, None));
        }
        let ids = ContinuityIds {
            token,
            distinct_id: request.distinct_id,
            anon_distinct_id: request.anon_distinct_id,
        };
        let found = self.inner.hash_key_overrides(&ids, &keys).map_err(PyCoreError::from)?;
        let write = found.remember.then(|| HashKeyOverrideWrite {
            store: Arc::clone(&self.inner),
            token: token.to_owned(),
            distinct_id: ids.distinct_id.to_owned(),
            anon_distinct_id: ids.anon_distinct_id.map(str::to_owned),
            flag_keys: keys.iter().map(|key| (*key).to_owned()).collect(),
        });
        Ok((Some(found.overrides), write))
    }
}

/// A `/flags` request's anonymous id, to be remembered as its persons' hash key: the answer is
/// already right without it, and the write waits for the store's write lock, so it is done off
/// the event loop.
#[pyclass(name = "HashKeyOverrideWrite", module = "hogflare._hogflare", frozen)]
pub struct HashKeyOverrideWrite {
    store: Arc<Store>,
    token: String,
    distinct_id: String,
    anon_distinct_id: Option<String>,
    flag_keys: Vec<String>,
}

#[pymethods]
impl HashKeyOverrideWrite {
    /// Write it (with the GIL released); `StorageError` when the store refuses.
    fn write(&self, py: Python<'_>) -> PyResult<()> {
        let ids = ContinuityIds {
            token: &self.token,
            distinct_id: &self.distinct_id,
            anon_distinct_id: self.anon_distinct_id.as_deref(),
        };
        let keys: Vec<&str> = self.flag_keys.iter().map(String::as_str).collect();
        py.detach(|| self.store.remember_hash_keys(&ids, &keys))
            .map_err(PyCoreError::from)?;
        Ok(())
    }
}
