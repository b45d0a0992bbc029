//! Harnesses for hogflare's fuzz targets, shared by the libFuzzer binaries (`fuzz_targets/`),
//! the replay of committed inputs (`tests/replay.rs`) and the seed writer (`examples/seeds.rs`).
//!
//! A harness decodes or evaluates one input and panics when an invariant breaks, so a wrong
//! answer is found as surely as a crash.

// The main crate's library is named for its Python module.
extern crate _hogflare as hogflare;

pub mod case;
pub mod decode;
pub mod flags;
pub mod json;
pub mod seeds;

/// The fuzz targets, as named in `Cargo.toml` and in `corpus/`, `regressions/` and `artifacts/`.
pub const TARGETS: [&str; 2] = ["decode", "flags"];
