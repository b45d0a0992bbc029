//! The project token rule of capture, for the routes Python answers itself.

use pyo3::prelude::*;

use crate::core::token;

/// The token as capture takes it (trimmed), or `None` when capture would refuse it.
#[pyfunction]
pub fn project_token(raw: &str) -> Option<String> {
    token::validate(raw).ok()
}
