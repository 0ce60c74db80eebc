//! The catalog ingestion code and the contract for the browser, over wasm-bindgen.
