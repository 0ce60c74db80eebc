//! SDXL (and SDXL Turbo): the UNet with SDXL's added `text_time` conditioning, loaded from diffusers'
//! `unet/` folder and checked against diffusers on a tiny SDXL-shaped model.
//!
//! SDXL conditions on the concatenated penultimate hidden states of two text encoders (CLIP ViT-L, 768 wide,
//! and OpenCLIP bigG, 1280 wide, giving 2048) plus the second encoder's projected pooled output and six
//! size/crop ids, which [`unet::Unet`] adds to the timestep embedding. SDXL Turbo is the same network
//! distilled for 1 to 4 steps without classifier-free guidance (CFG 0, Euler a with trailing timesteps):
//! only the defaults differ, which the catalog entry's `SamplingDefaults` carry.

pub mod pipeline;
pub mod unet;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use std::path::Path;
use unet::{Unet, UnetConfig};

/// Why SDXL weights could not be loaded or run; each names the file or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum SdxlError {
    /// A file that cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A config that does not parse or asks for something this model cannot build.
    #[error("bad SDXL config: {0}")]
    Config(String),
    /// The scheduler refused the step count or a step.
    #[error(transparent)]
    Scheduler(#[from] crate::schedulers::SchedulerError),
    /// A tensor operation failed, or a weight is missing (candle names it).
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

/// Shorthand for SDXL results.
pub type Result<T> = std::result::Result<T, SdxlError>;

/// Loads diffusers' `unet/` folder (`config.json` and `diffusion_pytorch_model.safetensors`), converting the
/// weights to `dtype` (they may be stored in another, as the fp16 variants are).
pub fn load_unet(dir: &Path, dtype: DType, device: &Device) -> Result<Unet> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| SdxlError::Io {
            path: path.display().to_string(),
            source,
        })
    };
    let config: UnetConfig = serde_json::from_str(&read("config.json")?)
        .map_err(|e| SdxlError::Config(format!("unet/config.json: {e}")))?;
    let weights = dir.join("diffusion_pytorch_model.safetensors");
    let tensors = candle_core::safetensors::load(&weights, device).map_err(|e| match e {
        candle_core::Error::Io(source) => SdxlError::Io {
            path: weights.display().to_string(),
            source,
        },
        e => SdxlError::Tensor(e),
    })?;
    Unet::new(VarBuilder::from_tensors(tensors, dtype, device), &config)
}
