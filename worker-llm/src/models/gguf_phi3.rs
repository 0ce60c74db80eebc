//! GGUF Phi-3, Phi-3.5 and Phi-4: on the CPU, the crate's batched decoder ([`super::decoder`]);
//! on GPUs and for long-context (LongRoPE) files, `candle_transformers::models::quantized_phi3`.

use artifacts_contract::{ModelFamily, WeightFormat};
use candle_core::Tensor;
use candle_transformers::models::quantized_phi3::ModelWeights;

use super::decoder::{self, Spec};
use super::{Adapted, Architecture, CandleModel, LoadContext, LoadedModel, Reset};
use crate::error::Result;

/// Registration of this architecture.
pub const ARCHITECTURE: Architecture = Architecture {
    family: ModelFamily::Phi3,
    format: WeightFormat::Gguf,
    names: &["phi3"],
    load,
};

fn load(ctx: &LoadContext) -> Result<LoadedModel> {
    let (content, mut file) = ctx.gguf()?;
    if let Some(model) = decoder::on_cpu(Spec::PHI3, ctx, &content, &file)? {
        return Ok(model);
    }
    Ok(Adapted::boxed(
        ModelWeights::from_gguf(false, content, &mut file, ctx.device)?,
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
