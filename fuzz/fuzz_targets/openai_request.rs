//! worker-llm's OpenAI and native request bodies: any bytes deserialize to a request or fail with an
//! error, and a request that deserializes is checked for every route's input without a panic; what the
//! checks accept is within the documented ranges (the engine's own validation agrees with them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use worker_llm::serve::{GenerateRequest, Input, MAX_CHOICES};

fuzz_target!(|data: &[u8]| {
    for input in [Input::Chat, Input::Text, Input::Either] {
        let Ok(request) = serde_json::from_slice::<GenerateRequest>(data) else {
            return;
        };
        if let Ok(parsed) = request.parse(input) {
            assert!((1..=MAX_CHOICES as usize).contains(&parsed.n));
            assert!(parsed.params.validate().is_ok(), "{:?}", parsed.params);
        }
    }
});
