//! Flux's 16-channel autoencoder (candle-transformers' `AutoEncoderKL`) with the shift and scale FLUX.1
//! applies around it, and a deterministic encoder for img2img and inpainting.
//!
//! The transformer works on `(latent - shift) · scale`; [`FluxVae::encode`] and [`FluxVae::decode`] take
//! and give latents in that space, so callers never see the raw VAE space.

use super::{FluxError, Result};
use crate::layers::vae::{AutoEncoderKL, AutoEncoderKLConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use std::collections::HashMap;

/// The fields of diffusers' `vae/config.json` a Flux VAE needs.
#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    /// Image channels in (3).
    pub in_channels: usize,
    /// Image channels out (3).
    pub out_channels: usize,
    /// Channels of each resolution level; the image is `2^(levels - 1)` times the latents.
    pub block_out_channels: Vec<usize>,
    /// Resnets per block.
    pub layers_per_block: usize,
    /// Latent channels (16 for FLUX.1).
    pub latent_channels: usize,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// Whether the model has `quant_conv` (FLUX.1's has not).
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    /// Whether the model has `post_quant_conv`.
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    /// Latents are multiplied by this after the shift.
    pub scaling_factor: f64,
    /// Subtracted from raw latents before scaling (0.1159 for FLUX.1).
    #[serde(default)]
    pub shift_factor: Option<f64>,
}

fn yes() -> bool {
    true
}

impl VaeConfig {
    /// Pixels per latent cell: 2 to the number of levels minus one (8 for FLUX.1).
    pub fn scale(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }
}

/// The autoencoder with Flux's latent shift and scale.
pub struct FluxVae {
    model: AutoEncoderKL,
    config: VaeConfig,
    dtype: DType,
}

impl FluxVae {
    /// Builds the VAE from diffusers-named tensors.
    ///
    /// candle's `DiagonalGaussianDistribution` only samples, with its own random numbers. To encode to the
    /// distribution's mode, the log-variance half of the last layer before it (`quant_conv` where there
    /// is one, else the encoder's `conv_out`, as in FLUX.1) is set to a large negative constant: the
    /// standard deviation is then exactly 0 and the sample is the mean. Decoding does not use that layer.
    pub fn new(
        mut tensors: HashMap<String, Tensor>,
        config: &VaeConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let latent = config.latent_channels;
        let last = if config.use_quant_conv {
            "quant_conv"
        } else {
            "encoder.conv_out"
        };
        crate::sd::vae::deterministic_encoder(&mut tensors, last, latent)?;
        let vb = VarBuilder::from_tensors(tensors, dtype, device);
        let model = AutoEncoderKL::new(
            vb,
            config.in_channels,
            config.out_channels,
            AutoEncoderKLConfig {
                block_out_channels: config.block_out_channels.clone(),
                layers_per_block: config.layers_per_block,
                latent_channels: latent,
                norm_num_groups: config.norm_num_groups,
                use_quant_conv: config.use_quant_conv,
                use_post_quant_conv: config.use_post_quant_conv,
            },
        )
        .map_err(|e| FluxError::Layout(format!("VAE: {e}")))?;
        Ok(FluxVae {
            model,
            config: config.clone(),
            dtype,
        })
    }

    /// The config it was built from.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    fn shift(&self) -> f64 {
        self.config.shift_factor.unwrap_or(0.0)
    }

    /// An image `(b, 3, h, w)` in [-1, 1] to the transformer's latent space (mode, shifted, scaled).
    pub fn encode(&self, image: &Tensor) -> Result<Tensor> {
        let mode = self.model.encode(&image.to_dtype(self.dtype)?)?.sample()?;
        Ok(((mode - self.shift())? * self.config.scaling_factor)?)
    }

    /// Latents of the transformer's space to an image `(b, 3, h, w)` in about [-1, 1] (f32).
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let raw = ((latents / self.config.scaling_factor)? + self.shift())?;
        self.decode_raw(&raw)
    }

    /// The VAE alone on latents already unscaled and unshifted (diffusers' `vae.decode`), for checks.
    pub fn decode_raw(&self, latents: &Tensor) -> Result<Tensor> {
        Ok(self
            .model
            .decode(&latents.to_dtype(self.dtype)?)?
            .to_dtype(DType::F32)?)
    }
}
