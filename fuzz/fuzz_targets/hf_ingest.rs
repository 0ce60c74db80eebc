//! HuggingFace ingestion: a model-info answer, a search answer, and the config files of a repo, each
//! from the same hostile bytes.
#![no_main]

use catalog::ingest::hf;
use catalog::ingest::hf_files::{self, FetchedFiles};
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = DateTime::<Utc>::UNIX_EPOCH;
    let _ = hf::entry_from_model_info_json(data, now);
    let _ = hf::parse_search(data, now);
    if let Ok(info) = hf::parse_model_info(data) {
        for id in ["hf:o/r", "hf:o/r:Q4_K_M", "hf:o/r@main:model.safetensors"] {
            let id = id.parse().expect("a valid id");
            if let Ok(plan) = hf::plan_fetch(&id, &info) {
                let mut files = FetchedFiles::new();
                for name in &plan.metadata_files {
                    files.insert(name.clone(), data.to_vec());
                }
                let _ = hf::build_entry(&id, &info, &files, None, now);
            }
        }
    }
    let mut files = FetchedFiles::new();
    for name in [
        "config.json",
        "tokenizer_config.json",
        "generation_config.json",
        "model_index.json",
    ] {
        files.insert(name.to_string(), data.to_vec());
    }
    let format = artifacts_contract::WeightFormat::Safetensors;
    let _ = hf_files::llm_config_from_files(&files, format);
    let _ = hf_files::image_config_from_diffusers(&files, "o/r");
});
