//! hogflare's Rust core (`core`, pure Rust) and its Python module `hogflare._hogflare` (`py`).

pub mod core;
#[cfg(feature = "python")]
mod py;

#[cfg(feature = "python")]
#[pyo3::pymodule(gil_used = false)]
fn _hogflare(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
    use pyo3::types::PyModuleMethods;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    py::init_pymodule(m)
}
