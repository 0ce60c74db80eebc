//! The catalog: turns what HuggingFace, CivitAI or a file on disk says about a model into a typed
//! [`artifacts_contract::ModelEntry`], stores it, and fetches and verifies its files.
//!
//! It sits right above the contract: `catalog-wasm` reuses its ingestion code in the browser, and the
//! workers (through `worker-runtime`) ask it where an entry's files are with [`resolve::resolve`].
//! [`ingest`] is pure (bytes in, entries out) and compiles for wasm32; everything that needs an
//! operating system sits behind the default feature `native`:
//! - [`store`]: the SQLite database ([`Catalog`]), in the catalog home ([`home`]).
//! - [`sources`]: HTTP clients for the Hub and CivitAI, and local files, feeding [`ingest`].
//! - [`download`]: fetching, resuming and verifying files (HF cache layout for `hf:` entries).
//! - [`resolve`]: absolute file paths of an available, compatible entry, for the workers.
//! - [`ids`]: catalog ids as every binary reads them (`file:` ids relative or absolute are one entry).
//! - [`ops`]: what the `catalog` command does (add, pull, verify, rm), as library calls.
//! - [`serve`]: `catalog serve`, the HTTP API and web UI over all of the above.

pub mod ingest;
#[cfg(all(test, feature = "native"))]
mod test_entries;

#[cfg(feature = "native")]
pub mod download;
#[cfg(feature = "native")]
pub mod home;
#[cfg(feature = "native")]
pub mod ids;
#[cfg(feature = "native")]
pub mod ops;
#[cfg(feature = "native")]
pub mod resolve;
#[cfg(feature = "native")]
pub mod serve;
#[cfg(feature = "native")]
pub mod sources;
#[cfg(feature = "native")]
pub mod store;

#[cfg(feature = "native")]
pub use store::{Catalog, Filter, StoreError};
