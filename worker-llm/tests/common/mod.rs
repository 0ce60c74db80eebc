//! Where the tests find the real GGUF files that `scripts/fetch-models.sh` caches.

#![allow(dead_code)] // each test binary uses the models it needs

use std::path::PathBuf;

/// The cached SmolLM2-135M-Instruct Q4_1 file; panics with the command to run when it is missing.
pub fn smollm2_gguf() -> PathBuf {
    cached("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The cached Gemma 3 270M Q4_K_M file (SentencePiece vocabulary); panics with the command to run when
/// it is missing.
pub fn gemma3_gguf() -> PathBuf {
    cached("gemma3-270m/gemma-3-270m-q4_k_m.gguf")
}

fn cached(relative: &str) -> PathBuf {
    let cache = std::env::var_os("OMC_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
                });
            base.join("open-model-catalog/models")
        });
    let path = cache.join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run `bash scripts/fetch-models.sh` first",
        path.display()
    );
    path
}
