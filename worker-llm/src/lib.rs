//! `worker-llm`: the text-generation worker on Candle.
//!
//! It sits at the top of the crate graph: it reads models that the `catalog` resolved (or a path, for
//! development), checks them against the contract's `WorkerCapabilities::worker_llm()`, and runs them.
//! This library is the engine: [`Engine`] loads a model (GGUF or safetensors, architecture detected from
//! the files and dispatched through the registry in [`models`]), renders chat templates, tokenizes, and
//! generates with streaming, cancellation, stop strings and seeded sampling. The binary's `generate`
//! command drives it from a terminal; [`serve`] puts the model behind the shared `worker-runtime` HTTP
//! server with OpenAI-compatible routes, through the batching engine of [`batch`] (continuous batching,
//! chunked prefill, a paged KV cache with prefix reuse).

pub mod batch;
pub mod chat;
pub mod cpu;
pub mod device;
pub mod engine;
pub mod error;
pub mod files;
mod generation;
pub mod models;
pub mod params;
pub mod resolve;
pub mod sampler;
pub mod serve;
mod stream;
pub mod tokenizer;

pub use chat::{ChatMessage, ChatTemplate, Role};
pub use device::default_dtype;
pub use engine::Engine;
pub use error::{LlmError, Result};
pub use files::{ModelFiles, ModelMeta};
pub use models::CausalLm;
pub use params::{Completion, FinishReason, GenerationParams, Prompt, Timings, TokenEvent, Usage};
