//! The registry of architectures, and the one decoder that runs them all ([`decoder`]).
//!
//! # Adding an architecture
//! 1. Write `src/models/<format>_<name>.rs` (copy the closest one): `pub const ARCHITECTURE:
//!    Architecture` naming the contract family, the weight format, the names found in the files, and
//!    the `decoder::Spec` that says how the architecture differs from Llama (add a constant in
//!    `decoder/spec.rs`, and a field if no existing one describes the difference).
//! 2. Add `mod <file>;` below and one line `<file>::ARCHITECTURE,` to [`ARCHITECTURES`].
//!
//! The test `registry_covers_exactly_the_declared_families` keeps the registry and
//! `WorkerCapabilities::worker_llm()` in step.

use artifacts_contract::{ModelFamily, WeightFormat};
use candle_core::{DType, Device};

pub use crate::batch::LoadedModel;
use crate::error::{LlmError, Result};
use crate::files::{ModelFiles, ModelMeta};
pub use decoder::Kernels;

mod decoder;
mod gguf_gemma3;
mod gguf_llama;
mod gguf_phi3;
mod gguf_qwen2;
mod gguf_qwen3;
mod st_gemma;
mod st_gemma2;
mod st_gemma3;
mod st_llama;
mod st_mistral;
mod st_phi;
mod st_phi3;
mod st_qwen2;
mod st_qwen3;

/// Every architecture this worker runs. One line per architecture; see the module docs.
pub const ARCHITECTURES: &[Architecture] = &[
    gguf_llama::ARCHITECTURE,
    gguf_qwen2::ARCHITECTURE,
    gguf_qwen3::ARCHITECTURE,
    gguf_phi3::ARCHITECTURE,
    gguf_gemma3::ARCHITECTURE,
    st_llama::ARCHITECTURE,
    st_mistral::ARCHITECTURE,
    st_phi::ARCHITECTURE,
    st_phi3::ARCHITECTURE,
    st_qwen2::ARCHITECTURE,
    st_qwen3::ARCHITECTURE,
    st_gemma::ARCHITECTURE,
    st_gemma2::ARCHITECTURE,
    st_gemma3::ARCHITECTURE,
];

/// A causal language model behind one signature, whatever Candle type runs it.
pub trait CausalLm: Send {
    /// Runs `tokens` at positions `position..position + tokens.len()` (the cache holds the earlier ones)
    /// and returns the logits of the last position, as f32, `vocab_size` long.
    fn forward(&mut self, tokens: &[u32], position: usize) -> Result<Vec<f32>>;
    /// Empties the cache for real, so the next forward starts a new sequence at position 0.
    fn reset(&mut self) -> Result<()>;
    /// End-of-sequence ids, vocab size, context length.
    fn meta(&self) -> &ModelMeta;
}

/// What the loader of an architecture gets.
pub struct LoadContext<'a> {
    /// The model's files.
    pub files: &'a ModelFiles,
    /// Shared facts already read from the files.
    pub meta: ModelMeta,
    /// Where the weights go.
    pub device: &'a Device,
    /// The dtype of unquantized weights (f32 on CPU, bf16 on GPUs).
    pub dtype: DType,
    /// Which kernels run the decoder.
    pub kernels: Kernels,
}

impl LoadContext<'_> {
    /// The GGUF header and the open file, for a quantized loader.
    pub fn gguf(&self) -> Result<(candle_core::quantized::gguf_file::Content, std::fs::File)> {
        let path = self.files.gguf.as_ref().ok_or_else(|| LlmError::ModelFiles {
            path: self.files.root.clone(),
            reason: "no GGUF file".into(),
        })?;
        crate::files::open_gguf(path)
    }
}

/// One registered architecture.
pub struct Architecture {
    /// The contract's family, as `WorkerCapabilities` declares it.
    pub family: ModelFamily,
    /// GGUF or safetensors.
    pub format: WeightFormat,
    /// Names found in the files: GGUF `general.architecture`, or config.json `model_type`.
    pub names: &'static [&'static str],
    /// How it differs from Llama; the decoder reads the rest from the files.
    pub(crate) spec: decoder::Spec,
}

/// Finds the architecture for `meta.architecture` in `format`, or says which names are supported.
pub fn find(format: WeightFormat, name: &str) -> Result<&'static Architecture> {
    ARCHITECTURES
        .iter()
        .find(|a| a.format == format && a.names.contains(&name))
        .ok_or_else(|| {
            let supported: Vec<&str> = ARCHITECTURES
                .iter()
                .filter(|a| a.format == format)
                .flat_map(|a| a.names.iter().copied())
                .collect();
            LlmError::UnsupportedArchitecture {
                name: name.to_string(),
                format: format.to_string(),
                supported: supported.join(", "),
            }
        })
}

/// Loads the model the files hold, picking the architecture from them, on the fastest kernels.
pub fn load(files: &ModelFiles, meta: ModelMeta, device: &Device, dtype: DType) -> Result<LoadedModel> {
    load_with(files, meta, device, dtype, Kernels::Auto)
}

/// Loads the model on the given kernels (tests run the GPUs' path, Candle's ops, on the CPU).
pub fn load_with(
    files: &ModelFiles,
    meta: ModelMeta,
    device: &Device,
    dtype: DType,
    kernels: Kernels,
) -> Result<LoadedModel> {
    let arch = find(files.format(), &meta.architecture)?;
    decoder::load(
        arch.spec,
        &LoadContext {
            files,
            meta,
            device,
            dtype,
            kernels,
        },
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use artifacts_contract::WorkerCapabilities;

    use super::*;

    #[test]
    fn registry_runs_exactly_the_declared_format_and_family_pairs() {
        // What the catalog promises (`catalog compat`) is what this registry loads: every (format, family)
        // the contract declares has an architecture here, and every name an architecture answers to
        // normalizes, as the catalog does it, to a declared pair of its format.
        let caps = WorkerCapabilities::worker_llm();
        let declared: BTreeSet<(String, ModelFamily)> = caps
            .llm_architectures
            .iter()
            .map(|a| (a.format.to_string(), a.family))
            .collect();
        let mut registered = BTreeSet::new();
        for a in ARCHITECTURES {
            registered.insert((a.format.to_string(), a.family));
            for name in a.names {
                let family = ModelFamily::from_architecture(name);
                assert!(
                    caps.runs_llm(a.format, family),
                    "{} `{name}` normalizes to {family}, which the contract does not declare for {}",
                    a.format,
                    a.format
                );
                registered.insert((a.format.to_string(), family));
            }
        }
        assert_eq!(registered, declared);
    }

    #[test]
    fn names_are_unique_within_a_format() {
        let mut seen = BTreeSet::new();
        for a in ARCHITECTURES {
            for n in a.names {
                assert!(seen.insert((a.format.to_string(), *n)), "{n} registered twice");
            }
        }
    }

    #[test]
    fn an_unknown_architecture_names_the_supported_ones() {
        let err = find(WeightFormat::Gguf, "mamba").err().unwrap();
        let msg = err.to_string();
        assert!(
            msg.contains("mamba") && msg.contains("llama") && msg.contains("gemma3"),
            "{msg}"
        );
    }
}
