//! `worker-llm serve` over real HTTP on loopback. Protocol tests run a tiny random llama (the core's
//! fixture, with a word-level tokenizer written beside it: instant, deterministic text); tests where the
//! text matters, or a job must last, run the real SmolLM2-135M-Instruct (`scripts/fetch-models.sh`).
//! The official `openai` Python client and prometheus_client's parser come from
//! `scripts/test-python.sh`. What the server answers is checked against the engine run in process.

#[path = "../common/mod.rs"]
mod smollm2;

mod common;

mod batching;
mod errors;
mod openai_client;
mod protocol;
mod queue;
mod shutdown;
