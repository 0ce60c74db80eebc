//! The catalog's ingestion code and the contract for the browser, over wasm-bindgen.
//!
//! The web UI and the npm package under `ts/` must say exactly what the native catalog says about a
//! model, so this crate holds no mapping of its own: it exposes the contract (catalog ids, worker
//! compatibility) and the sans-IO ingestion of the `catalog` crate (built with `default-features =
//! false`) to JavaScript, and adds only the glue a browser needs: conversion of values through the
//! tsify-generated types, errors as JavaScript `Error`s that name the problem, and `fetch`.
//! It sits above `catalog` and `artifacts-contract` and below the TypeScript package.
//!
//! Every export has a plain Rust core (tested natively) and a thin `#[wasm_bindgen]` wrapper.

pub mod compat;
pub mod error;
pub mod fetch;
pub mod http;
pub mod ids;
pub mod ingest;

pub use error::WasmError;
