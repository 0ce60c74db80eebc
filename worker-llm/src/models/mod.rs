//! The model trait every architecture implements, and the registry that picks one from the files.
//!
//! # Adding an architecture
//! 1. Write `src/models/<format>_<name>.rs` (copy the closest one): a loader that runs the model on the
//!    batched CPU decoder (`decoder::on_cpu` for GGUF, `decoder::safetensors_on_cpu`, with the
//!    architecture's `decoder::Spec`: add one there if no existing one describes it), else, for GPUs,
//!    builds the Candle type and boxes it with [`Adapted::boxed`] (an `impl CandleModel`: its forward and
//!    its cache reset); and `pub const ARCHITECTURE: Architecture` naming the contract family, the weight
//!    format, the names found in the files and the loader.
//! 2. Add `mod <file>;` below and one line `<file>::ARCHITECTURE,` to [`ARCHITECTURES`].
//!
//! The test `registry_covers_exactly_the_declared_families` keeps the registry and
//! `WorkerCapabilities::worker_llm()` in step.

use artifacts_contract::{ModelFamily, WeightFormat};
use candle_core::{DType, Device, Tensor};

pub use crate::batch::LoadedModel;
use crate::error::{LlmError, Result};
use crate::files::{ModelFiles, ModelMeta};

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
}

impl LoadContext<'_> {
    /// Memory-maps the safetensors files for a Candle `VarBuilder`.
    pub fn var_builder(&self) -> Result<candle_nn::VarBuilder<'static>> {
        // SAFETY: the files are memory-mapped read-only; like every Candle loader we assume nobody
        // truncates them while the model is loaded.
        Ok(unsafe {
            candle_nn::VarBuilder::from_mmaped_safetensors(&self.files.safetensors, self.dtype, self.device)?
        })
    }

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
    /// Builds the model.
    pub load: fn(&LoadContext) -> Result<LoadedModel>,
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

/// Loads the model the files hold, picking the architecture from them.
pub fn load(files: &ModelFiles, meta: ModelMeta, device: &Device, dtype: DType) -> Result<LoadedModel> {
    let arch = find(files.format(), &meta.architecture)?;
    (arch.load)(&LoadContext {
        files,
        meta,
        device,
        dtype,
    })
}

/// Last-position logits as f32, whether Candle returned (1, vocab), (1, 1, vocab) or (1, seq, vocab).
fn last_logits(logits: &Tensor) -> Result<Vec<f32>> {
    let vocab = *logits.dims().last().unwrap_or(&0);
    let flat = logits.flatten_all()?;
    let n = flat.dim(0)?;
    Ok(flat
        .narrow(0, n - vocab, vocab)?
        .to_dtype(DType::F32)?
        .to_vec1()?)
}

/// How a Candle type empties its cache.
pub(crate) enum Reset {
    /// The cache is empty now.
    Done,
    /// The type has no public reset and clears its cache when called at position 0: the next forward
    /// must start there, which [`Adapted`] enforces.
    AtPositionZero,
}

/// The two calls that differ between Candle model types; [`Adapted`] turns them into a [`CausalLm`].
pub(crate) trait CandleModel: Send {
    /// Candle's forward on a (1, n) input at `position`, returning logits in the type's own shape.
    fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor>;
    /// Empties the cache (rebuilding it where the type has no reset).
    fn clear_cache(&mut self) -> candle_core::Result<Reset>;
}

/// A Candle model with its metadata, behind the [`CausalLm`] signature.
pub(crate) struct Adapted<M> {
    model: M,
    meta: ModelMeta,
    device: Device,
    reset_pending: bool,
}

impl<M: CandleModel + 'static> Adapted<M> {
    /// Boxes `model` as a [`CausalLm`] running one sequence at a time.
    pub(crate) fn boxed(model: M, ctx: &LoadContext) -> LoadedModel {
        LoadedModel::Serial(Box::new(Adapted {
            model,
            meta: ctx.meta.clone(),
            device: ctx.device.clone(),
            reset_pending: false,
        }))
    }
}

impl<M: CandleModel> CausalLm for Adapted<M> {
    fn forward(&mut self, tokens: &[u32], position: usize) -> Result<Vec<f32>> {
        if self.reset_pending && position != 0 {
            return Err(LlmError::Internal(format!(
                "after a reset the first forward must start at position 0, not {position}"
            )));
        }
        self.reset_pending = false;
        let input = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        last_logits(&self.model.forward(&input, position)?)
    }

    fn reset(&mut self) -> Result<()> {
        self.reset_pending = matches!(self.model.clear_cache()?, Reset::AtPositionZero);
        Ok(())
    }

    fn meta(&self) -> &ModelMeta {
        &self.meta
    }
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
