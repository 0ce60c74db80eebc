//! Safetensors Llama (Llama 2/3.x, SmolLM, TinyLlama) on `candle_transformers::models::llama`.
//!
//! Candle keeps Llama's cache outside the model: a reset builds a new `Cache`.

use artifacts_contract::{ModelFamily, WeightFormat};
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::llama::{Cache, Config, Llama, LlamaConfig};

use super::decoder::{self, Spec};
use super::{Adapted, Architecture, CandleModel, LoadContext, LoadedModel, Reset};
use crate::error::Result;

/// Registration of this architecture.
pub const ARCHITECTURE: Architecture = Architecture {
    family: ModelFamily::Llama,
    format: WeightFormat::Safetensors,
    names: &["llama"],
    load,
};

struct LlamaWithCache {
    model: Llama,
    cache: Cache,
    config: Config,
    dtype: DType,
    device: Device,
}

fn load(ctx: &LoadContext) -> Result<LoadedModel> {
    if let Some(model) = decoder::safetensors_on_cpu(Spec::LLAMA_HF, ctx)? {
        return Ok(model);
    }
    let config: LlamaConfig = ctx.files.config_as()?;
    let config = config.into_config(false);
    let model = Llama::load(ctx.var_builder()?, &config)?;
    let cache = Cache::new(true, ctx.dtype, &config, ctx.device)?;
    let device = ctx.device.clone();
    Ok(Adapted::boxed(
        LlamaWithCache {
            model,
            cache,
            config,
            dtype: ctx.dtype,
            device,
        },
        ctx,
    ))
}

impl CandleModel for LlamaWithCache {
    fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor> {
        self.model.forward(input, position, &mut self.cache)
    }

    fn clear_cache(&mut self) -> candle_core::Result<Reset> {
        self.cache = Cache::new(true, self.dtype, &self.config, &self.device)?;
        Ok(Reset::Done)
    }
}
