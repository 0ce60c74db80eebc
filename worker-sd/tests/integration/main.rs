//! worker-sd's integration tests, in one binary so candle links once.

mod common;
mod embeddings;
mod lora;
mod rng;
mod schedulers;
mod server;
mod tiny_sd15;
mod vae_tiling;
