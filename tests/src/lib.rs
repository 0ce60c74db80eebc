//! Helpers for the end-to-end tests in `tests/tests/`: the workspace's binaries run as a user runs them
//! (a real catalog home, real processes, loopback servers only), the fixtures, and the loopback fake hub
//! that the catalog's own tests share.
//!
//! The binaries are the ones `cargo test --workspace` builds beside this crate's test executables
//! (`target/debug/catalog`, `worker-llm`, `worker-sd`); a test that cannot find one says how to build it.

pub mod harness;
pub mod server;

pub use harness::{
    Bin, Home, Run, Served, fixtures, free_port, relative_to, sha256_hex, smollm2_gguf, test_python,
    word_level_tokenizer,
};
pub use server::{Route, Seen, Server};
