//! `worker-sd` turns a catalog entry of an image model (Stable Diffusion, SDXL, Flux) into images with Candle.
//!
//! It sits beside `worker-llm` above `worker-runtime` and the catalog, and uses the contract's types
//! (`ImageConfig`, `WorkerCapabilities::worker_sd`) rather than its own. The diffusion schedulers
//! (`schedulers`) and the SD 1.x/2.x pipeline (`sd`) are each checked against diffusers on recorded
//! fixtures of a tiny random pipeline.
//!
//! # Where a new model family plugs in
//! A base (SDXL, Flux) is a module implementing [`pipeline::ImagePipeline`] (`generate_one` turns a
//! validated request, an image index and its [`noise::Noise`] into a `[-1, 1]` image tensor, calling
//! the progress callback after each step; `preview` draws latents cheaply) and exposing a
//! `pub static BASE: pipeline::BaseSpec` (its catalog bases, how it recognizes its files, how it loads
//! them). Registering it is one line in [`pipeline::BASES`] plus its `pub mod` line here. Everything else
//! is shared: request validation ([`request`]), seeds per image, progress and cancellation
//! ([`pipeline::generate`]), PNGs with their parameters ([`output`]), the CLI and the HTTP server.

pub mod cpu;
pub mod device;
pub mod embeddings;
pub mod error;
pub mod flux;
pub mod layers;
pub mod loading;
pub mod lora;
pub mod noise;
pub mod output;
pub mod pipeline;
pub mod request;
pub mod resolve;
pub mod rng;
pub mod schedulers;
pub mod sd;
pub mod sdxl;
pub mod server;
pub mod upload;

pub use error::{Result, SdError};

use artifacts_contract::WorkerCapabilities;

/// What this worker declares it runs, so that `compat::check` and the catalog agree with the binary.
pub fn capabilities() -> WorkerCapabilities {
    WorkerCapabilities::worker_sd()
}
