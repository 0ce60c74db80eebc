//! Safetensors Qwen 2 and 2.5 on `candle_transformers::models::qwen2`.

use artifacts_contract::{ModelFamily, WeightFormat};
use candle_core::Tensor;
use candle_transformers::models::qwen2::{Config, ModelForCausalLM};

use super::decoder::{self, Spec};
use super::{Adapted, Architecture, CandleModel, LoadContext, LoadedModel, Reset};
use crate::error::Result;

/// Registration of this architecture.
pub const ARCHITECTURE: Architecture = Architecture {
    family: ModelFamily::Qwen2,
    format: WeightFormat::Safetensors,
    names: &["qwen2"],
    load,
};

fn load(ctx: &LoadContext) -> Result<LoadedModel> {
    if let Some(model) = decoder::safetensors_on_cpu(Spec::QWEN2, ctx)? {
        return Ok(model);
    }
    let config: Config = ctx.files.config_as()?;
    Ok(Adapted::boxed(
        ModelForCausalLM::new(&config, ctx.var_builder()?)?,
        ctx,
    ))
}

impl CandleModel for ModelForCausalLM {
    fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor> {
        ModelForCausalLM::forward(self, input, position)
    }

    fn clear_cache(&mut self) -> candle_core::Result<Reset> {
        self.clear_kv_cache();
        Ok(Reset::Done)
    }
}
