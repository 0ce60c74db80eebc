//! GGUF Gemma 3: on the CPU, the crate's batched decoder ([`super::decoder`]);
//! on GPUs, `candle_transformers::models::quantized_gemma3`.

use artifacts_contract::{ModelFamily, WeightFormat};
use candle_core::Tensor;
use candle_transformers::models::quantized_gemma3::ModelWeights;

use super::decoder::{self, Spec};
use super::{Adapted, Architecture, CandleModel, LoadContext, LoadedModel, Reset};
use crate::error::Result;

/// Registration of this architecture.
pub const ARCHITECTURE: Architecture = Architecture {
    family: ModelFamily::Gemma3,
    format: WeightFormat::Gguf,
    names: &["gemma3"],
    load,
};

fn load(ctx: &LoadContext) -> Result<LoadedModel> {
    let (content, mut file) = ctx.gguf()?;
    if let Some(model) = decoder::on_cpu(Spec::GEMMA3, ctx, &content, &file)? {
        return Ok(model);
    }
    Ok(Adapted::boxed(
        ModelWeights::from_gguf(content, &mut file, ctx.device)?,
        ctx,
    ))
}

impl CandleModel for ModelWeights {
    fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor> {
        ModelWeights::forward(self, input, position)
    }

    fn clear_cache(&mut self) -> candle_core::Result<Reset> {
        // No public reset: the type clears its cache at position 0.
        Ok(Reset::AtPositionZero)
    }
}
