//! The VAE of SD 1.x/2.x (candle-transformers' `AutoEncoderKL`) from a diffusers `vae/config.json`,
//! with a deterministic encoder: img2img and inpainting start from the mode of the latent distribution.

use std::collections::HashMap;

use crate::layers::vae::{AutoEncoderKL, AutoEncoderKLConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
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

    /// Latents as the UNet makes them (scaled) -> image in [-1, 1]. Latents larger than
    /// [`TILE_ABOVE`] on a side (images past 1024 pixels) are decoded in tiles.
    pub fn decode(&self, latents: &Tensor) -> candle_core::Result<Tensor> {
        let latents = (latents / self.config.scaling_factor)?;
        let (_, _, h, w) = latents.dims4()?;
        if h.max(w) > TILE_ABOVE {
            self.decode_tiled(&latents, TILE_LATENTS)
        } else {
            self.model.decode(&latents)
        }
    }

    /// Latents already divided by the scaling factor -> image, as diffusers' `vae.decode`.
    pub fn decode_unscaled(&self, latents: &Tensor) -> candle_core::Result<Tensor> {
        self.model.decode(latents)
    }

    /// Unscaled latents -> image, decoded in tiles of `tile` latents as diffusers' `enable_vae_tiling`
    /// (`AutoencoderKL.tiled_decode`): tiles overlap by a quarter, each tile's first quarter is blended
    /// linearly with the tiles above and to its left, and only the first three quarters of each are kept.
    /// Memory is that of one tile's decode, whatever the image size.
    pub fn decode_tiled(&self, latents: &Tensor, tile: usize) -> candle_core::Result<Tensor> {
        let (_, _, h, w) = latents.dims4()?;
        let scale = self.config.scale();
        let step = tile - tile / 4;
        let blend = tile * scale / 4;
        let keep = tile * scale - blend;
        let mut rows: Vec<Vec<Tensor>> = Vec::new();
        for i in (0..h).step_by(step) {
            let mut row = Vec::new();
            for j in (0..w).step_by(step) {
                let part = latents
                    .narrow(2, i, tile.min(h - i))?
                    .narrow(3, j, tile.min(w - j))?;
                let mut decoded = self.model.decode(&part.contiguous()?)?;
                if let Some(above) = rows.last().and_then(|r: &Vec<Tensor>| r.get(row.len())) {
                    decoded = blend_edge(above, &decoded, blend, 2)?;
                }
                if let Some(left) = row.last() {
                    decoded = blend_edge(left, &decoded, blend, 3)?;
                }
                row.push(decoded);
            }
            rows.push(row);
        }
        let kept = rows
            .iter()
            .map(|row| {
                let parts = row
                    .iter()
                    .map(|t| {
                        let (_, _, th, tw) = t.dims4()?;
                        t.narrow(2, 0, keep.min(th))?.narrow(3, 0, keep.min(tw))
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::cat(&parts, 3)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::cat(&kept, 2)
    }
}

/// Latent side above which [`Vae::decode`] decodes in tiles (1024-pixel images are still decoded whole).
pub const TILE_ABOVE: usize = 128;
/// Tile side in latents: 512 pixels, as diffusers' tiling for SD 1.x.
pub const TILE_LATENTS: usize = 64;

/// `b` with its first `extent` rows (`dim` 2) or columns (`dim` 3) faded in from the last ones of `a`:
/// diffusers' `blend_v` and `blend_h`.
fn blend_edge(a: &Tensor, b: &Tensor, extent: usize, dim: usize) -> candle_core::Result<Tensor> {
    let extent = extent.min(a.dim(dim)?).min(b.dim(dim)?);
    if extent == 0 {
        return Ok(b.clone());
    }
    let ramp: Vec<f32> = (0..extent).map(|y| y as f32 / extent as f32).collect();
    let shape = if dim == 2 {
        (1, 1, extent, 1)
    } else {
        (1, 1, 1, extent)
    };
    let ramp = Tensor::from_vec(ramp, shape, b.device())?.to_dtype(b.dtype())?;
    let tail = a.narrow(dim, a.dim(dim)? - extent, extent)?;
    let head = b.narrow(dim, 0, extent)?;
    let faded = (tail.broadcast_mul(&(1.0 - &ramp)?)? + head.broadcast_mul(&ramp)?)?;
    let rest = b.narrow(dim, extent, b.dim(dim)? - extent)?;
    Tensor::cat(&[&faded, &rest], dim)
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
