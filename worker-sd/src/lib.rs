//! `worker-sd` turns a catalog entry of an image model (Stable Diffusion, SDXL, Flux) into images with Candle.
//!
//! It sits beside `worker-llm` above `worker-runtime` and the catalog, and uses the contract's types
//! (`ImageConfig`, `WorkerCapabilities::worker_sd`) rather than its own. This foundation holds the
//! diffusion schedulers (`schedulers`), each checked against diffusers on recorded fixtures; model loading,
//! generation and serving build on it.

pub mod flux;
pub mod schedulers;
pub mod sdxl;

use artifacts_contract::WorkerCapabilities;

/// What this worker declares it runs, so that `compat::check` and the catalog agree with the binary.
pub fn capabilities() -> WorkerCapabilities {
    WorkerCapabilities::worker_sd()
}
