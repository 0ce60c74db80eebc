//! Where the tests find the real SmolLM2 GGUF that `scripts/fetch-models.sh` caches.

use std::path::PathBuf;

/// The cached SmolLM2-135M-Instruct Q4_1 file; panics with the command to run when it is missing.
pub fn smollm2_gguf() -> PathBuf {
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
    let path = cache.join("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run `bash scripts/fetch-models.sh` first",
        path.display()
    );
    path
}
