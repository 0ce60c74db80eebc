//! Safetensors Gemma 3 (text: 270M, 1B, and the language model of the larger multimodal checkpoints)
//! on `candle_transformers::models::gemma3`.
//!
//! Known limit: the prompt is fed one token at a time (a candle 0.11.1 bug with multi-token input, see
//! `forward`), so prefill runs at decode speed.

use artifacts_contract::{ModelFamily, WeightFormat};
use candle_core::Tensor;
use candle_transformers::models::gemma3::{Config, Model};

use super::decoder::{self, Spec};
use super::{Adapted, Architecture, CandleModel, LoadContext, LoadedModel, Reset};
use crate::error::{LlmError, Result};

/// Registration of this architecture.
pub const ARCHITECTURE: Architecture = Architecture {
    family: ModelFamily::Gemma3,
    format: WeightFormat::Safetensors,
    names: &["gemma3", "gemma3_text"],
    load,
};

fn load(ctx: &LoadContext) -> Result<LoadedModel> {
    if let Some(model) = decoder::safetensors_on_cpu(Spec::GEMMA3, ctx)? {
        return Ok(model);
    }
    let raw: serde_json::Value = ctx.files.config_as()?;
    // Multimodal checkpoints nest the language model's config and prefix its weights.
    let (config, vb) = match raw.get("text_config") {
        Some(text) => (text.clone(), ctx.var_builder()?.pp("language_model")),
        None => (raw, ctx.var_builder()?),
    };
    let config: Config = serde_json::from_value(config).map_err(|e| LlmError::Config {
        file: "config.json".into(),
        reason: e.to_string(),
    })?;
    Ok(Adapted::boxed(Model::new(false, &config, vb)?, ctx))
}

impl CandleModel for Model {
    /// Token by token: candle 0.11.1's gemma3 appends a non-contiguous value tensor to its KV cache
    /// when given more than one token ("slice-set only supports contiguous tensors"), so a prefill
    /// runs as single-token steps (correct, slower; see the module docs).
    fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor> {
        let n = input.dim(1)?;
        let mut logits = None;
        for i in 0..n {
            logits = Some(Model::forward(self, &input.narrow(1, i, 1)?, position + i)?);
        }
        logits.ok_or_else(|| candle_core::Error::Msg("empty input".into()))
    }

    fn clear_cache(&mut self) -> candle_core::Result<Reset> {
        self.clear_kv_cache();
        Ok(Reset::Done)
    }
}
