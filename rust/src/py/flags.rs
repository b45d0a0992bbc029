//! `FlagSet`: the compiled flags as Python sees them; evaluation is one call into the core.

use std::collections::{BTreeMap, HashMap};

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use pyo3::exceptions::PyValueError;

use super::exceptions::PayloadError;
use super::geoip::PyGeoIp;
use super::ingest::time_from;
use super::store::PyStore;
use super::store_flags::HashKeyOverrideWrite;
use crate::core::cookieless::{self, CookielessMode, Visitor};
use crate::core::flags::{token_refusal, BodyError, FlagSet, FlagsBody, Request, Shape, Stored, MISSING_DISTINCT_ID};
use crate::core::rawjson;

/// Past this many flags an evaluation may take long enough to be worth releasing the GIL for.
/// Below it (tens of microseconds), releasing it only hands it to Granian's threads and makes
/// the event loop wait to take it back: the benchmark's 50 flags answered ~8 % faster held.
const DETACH_FLAGS: usize = 200;

/// `(status, body, experience continuity's write)` of a `/flags` POST.
type Answer<'py> = (u16, Bound<'py, PyBytes>, Option<Bound<'py, HashKeyOverrideWrite>>);

#[pyclass(name = "FlagSet", module = "hogflare._hogflare", frozen)]
pub struct PyFlagSet {
    inner: FlagSet,
}

/// A cookieless visitor's flags request as the server saw it: the mode, the client's address,
/// `Origin` and `User-Agent`.
type CookielessVisitor<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);

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

    /// The JSON answer for a remote config flag's payload, by key or id; `None` for no such flag.
    fn remote_config_payload(&self, key_or_id: &str) -> Option<String> {
        self.inner.remote_config_payload(key_or_id)
    }

    /// PostHog's local-evaluation document (JSON) for the flags the SDKs can evaluate.
    fn definitions<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.definitions_json().as_bytes())
    }

    /// The whole `/flags` or `/decide` answer for one user, in the shape the route and its `v`
    /// ask for. The stored properties are overridden by the request's, and `distinct_id` joins
    /// the person's; `hash_keys` are experience continuity's stored hash keys. `evaluate=False`
    /// answers with no flags (a GET, or `disable_flags`). Without a `request_id`, a new UUID is
    /// the answer's `requestId`.
    #[pyo3(signature = (distinct_id, *, request_id=None, decide=false, version=None, evaluate=true, stored_person=None, stored_groups=None, person_properties="{}", groups="{}", group_properties="{}", anon_distinct_id=None, hash_keys=None, device_id=None, flag_keys=None, environments=None, now=None))]
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
        hash_keys: Option<HashMap<String, String>>,
        device_id: Option<&str>,
        flag_keys: Option<Vec<String>>,
        environments: Option<Vec<String>>,
        now: Option<f64>,
    ) -> Bound<'py, PyBytes> {
        let mut request = Request {
            distinct_id,
            person_properties,
            groups,
            group_properties,
            anon_distinct_id,
            hash_key_overrides: None,
            device_id,
            flag_keys: flag_keys.as_deref(),
            environments: environments.as_deref(),
            stored: Some(Stored {
                person: stored_person,
                groups: stored_groups,
            }),
        };
        // Hash keys count only where the server would read them: when a continuity flag is asked for.
        if !self.inner.continuity_keys(&request).is_empty() {
            request.hash_key_overrides = hash_keys.as_ref();
        }
        let body = self.body(
            py,
            &request,
            evaluate,
            Shape::for_request(decide, version),
            request_id,
            now,
        );
        PyBytes::new(py, body.as_bytes())
    }

    /// A `/flags` or `/decide` POST body (JSON bytes, already inflated or decoded) answered in
    /// one call: read, its token checked, the person and groups read from `store`, every flag
    /// evaluated. `(200, answer, remember)`, or `(401, reason, None)` for a missing or refused
    /// token; `None` when the body is not strict JSON (it may still be JSON5 or base64). A body
    /// of the wrong shape raises `PayloadError`. `remember`, when not `None`, is experience
    /// continuity's write of the request's anonymous id, for the caller to run off its event loop.
    /// With `geoip` and `client_ip`, the person properties the request lacks are filled from
    /// where that address is (unless the body says `geoip_disable`), as PostHog's service does.
    #[pyo3(signature = (body, *, store=None, project_tokens=None, decide=false, version=None, request_id=None, now=None, visitor=None, geoip=None, client_ip=None))]
    #[allow(clippy::too_many_arguments, clippy::needless_pass_by_value)] // pyo3 extracts owned values
    fn answer<'py>(
        &self,
        py: Python<'py>,
        body: &[u8],
        store: Option<PyRef<'py, PyStore>>,
        project_tokens: Option<Vec<String>>,
        decide: bool,
        version: Option<i64>,
        request_id: Option<&str>,
        now: Option<f64>,
        visitor: Option<CookielessVisitor<'_>>,
        geoip: Option<PyRef<'py, PyGeoIp>>,
        client_ip: Option<&str>,
    ) -> PyResult<Option<Answer<'py>>> {
        let Ok(text) = std::str::from_utf8(body) else {
            return Ok(None);
        };
        // Half an emoji in a property would otherwise cost the request all its properties.
        let text = rawjson::replace_lone_surrogates(text);
        let mut parsed = match FlagsBody::parse(&text) {
            Ok(parsed) => parsed,
            Err(BodyError::NotJson) => return Ok(None),
            Err(BodyError::TooDeep) => {
                return Err(PayloadError::new_err("the flags request body is nested too deeply"))
            }
            Err(BodyError::Invalid(why)) => return Err(PayloadError::new_err(format!("invalid flags request: {why}"))),
        };
        if let Some(refusal) = token_refusal(parsed.token.as_deref(), project_tokens.as_deref()) {
            return Ok(Some((401, PyBytes::new(py, refusal.as_bytes()), None)));
        }
        let shape = Shape::for_request(decide, version);
        let evaluate = !parsed.disable_flags && !self.inner.is_empty();
        if let (true, false, Some(geoip), Some(address)) = (evaluate, parsed.geoip_disable, &geoip, client_ip) {
            if let Some(location) = address
                .trim()
                .parse()
                .ok()
                .and_then(|address| geoip.inner.lookup(address))
            {
                parsed.locate(&location);
            }
        }
        let Some(distinct_id) = parsed.subject() else {
            return Err(PayloadError::new_err(MISSING_DISTINCT_ID));
        };
        let token = parsed.token.as_deref().unwrap_or_default();
        // A cookieless visitor's flags are for the id their events get (PostHog's flag service
        // hashes the same inputs, the site read from `Origin`).
        let cookieless_id = match (&store, visitor) {
            (Some(store), Some((mode, ip, origin, user_agent))) if evaluate && distinct_id == cookieless::SENTINEL => {
                let mode = CookielessMode::parse(mode)
                    .ok_or_else(|| PyValueError::new_err(format!("unknown cookieless mode {mode:?}")))?;
                let visitor = Visitor {
                    ip: ip.unwrap_or_default(),
                    host: origin.unwrap_or_default(),
                    user_agent: user_agent.unwrap_or_default(),
                    timezone: parsed.timezone.as_deref(),
                    extra: parsed.cookieless_hash_extra.as_deref().unwrap_or_default(),
                };
                // A store that cannot give the id (a full disk refusing the day's salt) leaves
                // the flags for the sentinel, as for a request that lacks the visitor's headers.
                cookieless::flags_visitor(mode, &visitor, time_from(now))
                    .and_then(|visitor| store.cookieless_id(py, token.trim(), &visitor).ok())
            }
            _ => None,
        };
        let distinct_id = cookieless_id.as_deref().unwrap_or(distinct_id);
        let (stored_person, stored_groups) = match (&store, evaluate) {
            (Some(store), true) => (
                store.person_properties(token, distinct_id)?,
                (parsed.groups != "{}")
                    .then(|| store.group_properties(token, &parsed.groups))
                    .transpose()?,
            ),
            _ => (None, None),
        };
        let mut request = Request {
            distinct_id,
            person_properties: &parsed.person_properties,
            groups: &parsed.groups,
            group_properties: &parsed.group_properties,
            // posthog-js names the sentinel as the anonymous id when a cookieless visitor
            // identifies; it is no one's, and would give every such user one hash key.
            anon_distinct_id: parsed
                .anon_distinct_id
                .as_deref()
                .filter(|anon| *anon != cookieless::SENTINEL),
            hash_key_overrides: None,
            device_id: parsed.device_id.as_deref(),
            flag_keys: parsed.flag_keys.as_deref(),
            environments: parsed.environments.as_deref(),
            stored: Some(Stored {
                person: stored_person.as_deref(),
                groups: stored_groups.as_deref(),
            }),
        };
        let (continuity, remember) = match (&store, evaluate) {
            (Some(store), true) => store.hash_key_overrides(token, &request, &self.inner)?,
            _ => (None, None),
        };
        request.hash_key_overrides = continuity.as_ref();
        let body = self.body(py, &request, evaluate, shape, request_id, now);
        let remember = remember.map(|write| Bound::new(py, write)).transpose()?;
        Ok(Some((200, PyBytes::new(py, body.as_bytes()), remember)))
    }
}

impl PyFlagSet {
    /// The answer body; the evaluation runs with the GIL held unless the set is large.
    fn body(
        &self,
        py: Python<'_>,
        request: &Request<'_>,
        evaluate: bool,
        shape: Shape,
        request_id: Option<&str>,
        now: Option<f64>,
    ) -> String {
        let now = time_from(now);
        let work = || {
            let results = if evaluate {
                self.inner.evaluate(request, now)
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
        if evaluate && self.inner.len() > DETACH_FLAGS {
            py.detach(work)
        } else {
            work()
        }
    }
}
