//! CivitAI ingestion: a model, a version and a models list, from the same hostile bytes.
#![no_main]

use catalog::ingest::civitai;
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = DateTime::<Utc>::UNIX_EPOCH;
    let _ = civitai::entry_from_model_json(data, now);
    let _ = civitai::entry_from_version_json(data, false, now);
    let _ = civitai::entry_from_version_json(data, true, now);
    let _ = civitai::parse_models_list(data, now);
});
