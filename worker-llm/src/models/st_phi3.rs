//! Safetensors Phi-3, Phi-3.5 and Phi-4 on `candle_transformers::models::phi3`.

use artifacts_contract::{ModelFamily, WeightFormat};
use candle_core::Tensor;
use candle_transformers::models::phi3::{Config, Model};

use super::decoder::{self, Spec};
use super::{Adapted, Architecture, CandleModel, LoadContext, LoadedModel, Reset};
use crate::error::Result;

/// Registration of this architecture.
pub const ARCHITECTURE: Architecture = Architecture {
    family: ModelFamily::Phi3,
    format: WeightFormat::Safetensors,
    names: &["phi3"],
    load,
};

fn load(ctx: &LoadContext) -> Result<LoadedModel> {
    if let Some(model) = decoder::safetensors_on_cpu(Spec::PHI3, ctx)? {
        return Ok(model);
    }
    let config: Config = ctx.files.config_as()?;
    Ok(Adapted::boxed(Model::new(&config, ctx.var_builder()?)?, ctx))
}

impl CandleModel for Model {
    fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor> {
        Model::forward(self, input, position)
    }

    fn clear_cache(&mut self) -> candle_core::Result<Reset> {
        self.clear_kv_cache();
        Ok(Reset::Done)
    }
}
