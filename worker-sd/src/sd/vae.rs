//! The VAE of SD 1.x/2.x (candle-transformers' `AutoEncoderKL`) from a diffusers `vae/config.json`,
//! with a deterministic encoder: img2img and inpainting start from the mode of the latent distribution.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};
use serde::Deserialize;

/// The fields of diffusers' `AutoencoderKL` config the model needs.
#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    /// Channels of each resolution level; the image is `2^(levels-1)` times the latents.
    pub block_out_channels: Vec<usize>,
    /// Resnets per block.
    #[serde(default = "two")]
    pub layers_per_block: usize,
    /// Latent channels.
    #[serde(default = "four")]
    pub latent_channels: usize,
    /// GroupNorm groups.
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    /// Latents are multiplied by this after encoding and divided before decoding.
    #[serde(default = "scaling_factor")]
    pub scaling_factor: f64,
    /// Whether the model has `quant_conv`.
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    /// Whether the model has `post_quant_conv`.
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
}

fn two() -> usize {
    2
}
fn four() -> usize {
    4
}
fn thirty_two() -> usize {
    32
}
fn scaling_factor() -> f64 {
    0.18215
}
fn yes() -> bool {
    true
}

impl VaeConfig {
    /// The VAE of SD 1.x and 2.x, for single-file checkpoints that carry no config.
    pub fn sd() -> Self {
        VaeConfig {
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            use_quant_conv: true,
            use_post_quant_conv: true,
        }
    }

    /// How many pixels one latent spans per side.
    pub fn scale(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }
}

/// An autoencoder that encodes to the mode of its latent distribution and decodes to [-1, 1] images.
pub struct Vae {
    model: AutoEncoderKL,
    config: VaeConfig,
}

impl Vae {
    /// Builds the VAE from diffusers-named tensors.
    ///
    /// candle's `DiagonalGaussianDistribution` only samples, with its own random numbers. To encode to the
    /// distribution's mode, the log-variance half of `quant_conv` is set to a large negative constant:
    /// the standard deviation is then exactly 0 and the sample is the mean. `decode` does not use it.
    pub fn new(
        mut tensors: HashMap<String, Tensor>,
        config: &VaeConfig,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let latent = config.latent_channels;
        deterministic_encoder(&mut tensors, "quant_conv", latent)?;
        let vb = VarBuilder::from_tensors(tensors, dtype, device);
        let candle_config = AutoEncoderKLConfig {
            block_out_channels: config.block_out_channels.clone(),
            layers_per_block: config.layers_per_block,
            latent_channels: latent,
            norm_num_groups: config.norm_num_groups,
            use_quant_conv: config.use_quant_conv,
            use_post_quant_conv: config.use_post_quant_conv,
        };
        Ok(Vae {
            model: AutoEncoderKL::new(vb, 3, 3, candle_config)?,
            config: config.clone(),
        })
    }

    /// The model's config.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// Image in [-1, 1], `(batch, 3, h, w)` -> latents already multiplied by the scaling factor.
    pub fn encode(&self, image: &Tensor) -> candle_core::Result<Tensor> {
        self.model.encode(image)?.sample()? * self.config.scaling_factor
    }

    /// The encoder's mode without the scaling factor, as diffusers' `latent_dist.mode()`.
    pub fn encode_mode(&self, image: &Tensor) -> candle_core::Result<Tensor> {
        self.model.encode(image)?.sample()
    }

    /// Latents as the UNet makes them (scaled) -> image in [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> candle_core::Result<Tensor> {
        self.model.decode(&(latents / self.config.scaling_factor)?)
    }

    /// Latents already divided by the scaling factor -> image, as diffusers' `vae.decode`.
    pub fn decode_unscaled(&self, latents: &Tensor) -> candle_core::Result<Tensor> {
        self.model.decode(latents)
    }
}

/// Makes the encoder's last layer (`layer`: `quant_conv`, or `encoder.conv_out` where there is none)
/// return the mode of the latent distribution: Candle's encoder samples, and the references take the
/// mean, so the log-variance half is set to a variance of zero (weights 0, bias -1e4).
pub(crate) fn deterministic_encoder(
    tensors: &mut HashMap<String, Tensor>,
    layer: &str,
    latent: usize,
) -> candle_core::Result<()> {
    let (weight_name, bias_name) = (format!("{layer}.weight"), format!("{layer}.bias"));
    let (Some(weight), Some(bias)) = (tensors.get(&weight_name), tensors.get(&bias_name)) else {
        return Ok(());
    };
    let weight = Tensor::cat(
        &[
            weight.narrow(0, 0, latent)?,
            weight.narrow(0, latent, latent)?.zeros_like()?,
        ],
        0,
    )?;
    let bias = Tensor::cat(
        &[
            bias.narrow(0, 0, latent)?,
            (bias.narrow(0, latent, latent)?.zeros_like()? - 1e4)?,
        ],
        0,
    )?;
    tensors.insert(weight_name, weight);
    tensors.insert(bias_name, bias);
    Ok(())
}
