//! worker-llm's OpenAI request bodies: any bytes deserialize to a request or fail with an error.
//! (Its `parse` into engine parameters takes `serve::request::Input`, which the crate does not export.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use worker_llm::serve::GenerateRequest;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<GenerateRequest>(data);
});
