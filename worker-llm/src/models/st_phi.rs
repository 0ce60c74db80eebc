//! Safetensors Phi-1, Phi-1.5 and Phi-2 on `candle_transformers::models::phi`.
//!
//! Candle's Phi counts positions itself (its forward takes none): the engine's positions always follow
//! the cache, so the given position is checked rather than passed.

use artifacts_contract::{ModelFamily, WeightFormat};
use candle_core::Tensor;
use candle_transformers::models::phi::{Config, Model};

use super::{Adapted, Architecture, CandleModel, LoadContext, LoadedModel, Reset};
use crate::error::Result;

/// Registration of this architecture.
pub const ARCHITECTURE: Architecture = Architecture {
    family: ModelFamily::Phi,
    format: WeightFormat::Safetensors,
    names: &["phi"],
    load,
};

struct Phi {
    model: Model,
    /// Tokens in Candle's cache.
    cached: usize,
}

fn load(ctx: &LoadContext) -> Result<LoadedModel> {
    let config: Config = ctx.files.config_as()?;
    Ok(Adapted::boxed(
        Phi {
            model: Model::new(&config, ctx.var_builder()?)?,
            cached: 0,
        },
        ctx,
    ))
}

impl CandleModel for Phi {
    fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor> {
        if position != self.cached {
            candle_core::bail!("phi continues from position {}, not {position}", self.cached);
        }
        let logits = self.model.forward(input)?;
        self.cached += input.dim(1)?;
        Ok(logits)
    }

    fn clear_cache(&mut self) -> candle_core::Result<Reset> {
        self.model.clear_kv_cache();
        self.cached = 0;
        Ok(Reset::Done)
    }
}
