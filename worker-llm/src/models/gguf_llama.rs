//! GGUF Llama (Llama 2/3.x, SmolLM, TinyLlama, Mistral 7B).
//!
//! On the CPU it runs on the crate's own decoder ([`super::decoder`], weights kept quantized, SIMD Q4_1):
//! many sequences per step over the engine's paged f16 cache, which is what makes it as fast as
//! llama.cpp alone and faster under load; on GPUs, or for a GGML type those blocks lack, on
//! `candle_transformers::models::quantized_llama`, one sequence at a time.

use artifacts_contract::{ModelFamily, WeightFormat};
use candle_core::Tensor;
use candle_transformers::models::quantized_llama::ModelWeights;

use super::decoder::{self, Spec};
use super::{Adapted, Architecture, CandleModel, LoadContext, LoadedModel, Reset};
use crate::error::Result;

/// Registration of this architecture.
pub const ARCHITECTURE: Architecture = Architecture {
    family: ModelFamily::Llama,
    format: WeightFormat::Gguf,
    names: &["llama", "mistral"],
    load,
};

fn load(ctx: &LoadContext) -> Result<LoadedModel> {
    let (content, mut file) = ctx.gguf()?;
    if let Some(model) = decoder::on_cpu(Spec::LLAMA, ctx, &content, &file)? {
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
        self.clear_kv_cache();
        Ok(Reset::Done)
    }
}
