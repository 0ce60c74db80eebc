//! A whole Flux text-to-image run as diffusers' `FluxPipeline` does it: T5 states and the pooled CLIP
//! vector from token ids, flow-matching Euler steps over packed latents, and the 16-channel VAE decode
//! with Flux's shift and scale.
//!
//! Latents are "packed": each 2 × 2 patch of the (16, h, w) latent image becomes one token of 64 values,
//! with position ids (0, row, column) for the transformer's rotary embedding.

use super::{FluxError, FluxTransformer, Result};
use crate::schedulers::{FlowMatchConfig, FlowMatchEuler, Scheduler};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::text_model::{Activation, ClipTextConfig, ClipTextTransformer};
use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};
use candle_transformers::models::t5::{self, T5EncoderModel};
use serde::Deserialize;
use std::path::Path;

/// The loaded parts of a Flux pipeline in diffusers' folder layout, ready to generate.
pub struct FluxPipeline {
    clip: ClipTextTransformer,
    t5: T5EncoderModel,
    transformer: FluxTransformer,
    vae: AutoEncoderKL,
    vae_config: VaeConfig,
    scheduler: FlowMatchConfig,
    dtype: DType,
    device: Device,
}

/// The fields of diffusers' `vae/config.json` a Flux decode needs.
#[derive(Debug, Clone, Deserialize)]
struct VaeConfig {
    in_channels: usize,
    out_channels: usize,
    block_out_channels: Vec<usize>,
    layers_per_block: usize,
    latent_channels: usize,
    norm_num_groups: usize,
    #[serde(default = "yes")]
    use_quant_conv: bool,
    #[serde(default = "yes")]
    use_post_quant_conv: bool,
    scaling_factor: f64,
    #[serde(default)]
    shift_factor: Option<f64>,
}

fn yes() -> bool {
    true
}

/// The fields of transformers' CLIP text `config.json` candle's text model takes.
#[derive(Debug, Clone, Deserialize)]
struct ClipConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    projection_dim: usize,
    hidden_act: String,
}

/// One generation's inputs after tokenizing, so runs are reproducible from them alone.
pub struct FluxRequest<'a> {
    /// T5 token ids, (1, m).
    pub t5_tokens: &'a Tensor,
    /// CLIP token ids, (1, 77 or the model's length), ending in the end-of-text token.
    pub clip_tokens: &'a Tensor,
    /// Image height in pixels: a multiple of twice the VAE's downscale (16 for FLUX.1).
    pub height: usize,
    /// Image width in pixels, likewise.
    pub width: usize,
    /// Denoising steps (4 for schnell, 20 to 50 for dev).
    pub steps: usize,
    /// Guidance scale given to dev-style transformers (3.5 typical); schnell ignores it.
    pub guidance: f64,
    /// Unit Gaussian starting latents, packed (b, tokens, 64), so the caller owns the randomness.
    pub noise: &'a Tensor,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| FluxError::Io {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| FluxError::Config(format!("{}: {e}", path.display())))
}

fn var_builder(path: &Path, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
    Ok(VarBuilder::from_tensors(
        super::read_safetensors(path, device)?,
        dtype,
        device,
    ))
}

/// The one `.safetensors` file of a component folder (transformers' `model.safetensors`, diffusers'
/// `diffusion_pytorch_model.safetensors`).
fn weights_file(dir: &Path) -> Result<std::path::PathBuf> {
    ["model.safetensors", "diffusion_pytorch_model.safetensors"]
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| FluxError::NotSafetensors(dir.display().to_string()))
}

impl FluxPipeline {
    /// Loads `text_encoder/` (CLIP), `text_encoder_2/` (T5), `transformer/`, `vae/` and `scheduler/`.
    pub fn load_diffusers_folder(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let clip_config: ClipConfig = read_json(&dir.join("text_encoder/config.json"))?;
        if clip_config.hidden_act != "quick_gelu" {
            return Err(FluxError::Config(format!(
                "CLIP hidden_act {:?}: only quick_gelu is supported",
                clip_config.hidden_act
            )));
        }
        let clip_vb = var_builder(&weights_file(&dir.join("text_encoder"))?, dtype, device)?;
        // transformers 5 saves CLIPTextModel without the `text_model.` prefix older versions wrote.
        let clip_vb = if clip_vb.contains_tensor("text_model.embeddings.token_embedding.weight") {
            clip_vb.pp("text_model")
        } else {
            clip_vb
        };
        let clip = ClipTextTransformer::new(
            clip_vb,
            &ClipTextConfig {
                vocab_size: clip_config.vocab_size,
                embed_dim: clip_config.hidden_size,
                activation: Activation::QuickGelu,
                intermediate_size: clip_config.intermediate_size,
                max_position_embeddings: clip_config.max_position_embeddings,
                pad_with: None,
                num_hidden_layers: clip_config.num_hidden_layers,
                num_attention_heads: clip_config.num_attention_heads,
                projection_dim: clip_config.projection_dim,
            },
        )?;
        let t5_config: t5::Config = read_json(&dir.join("text_encoder_2/config.json"))?;
        let t5_vb = var_builder(&weights_file(&dir.join("text_encoder_2"))?, dtype, device)?;
        let t5 = T5EncoderModel::load(t5_vb, &t5_config)?;
        let transformer = FluxTransformer::load_diffusers_folder(&dir.join("transformer"), dtype, device)?;
        let vae_config: VaeConfig = read_json(&dir.join("vae/config.json"))?;
        let vae = AutoEncoderKL::new(
            var_builder(&weights_file(&dir.join("vae"))?, dtype, device)?,
            vae_config.in_channels,
            vae_config.out_channels,
            AutoEncoderKLConfig {
                block_out_channels: vae_config.block_out_channels.clone(),
                layers_per_block: vae_config.layers_per_block,
                latent_channels: vae_config.latent_channels,
                norm_num_groups: vae_config.norm_num_groups,
                use_quant_conv: vae_config.use_quant_conv,
                use_post_quant_conv: vae_config.use_post_quant_conv,
            },
        )?;
        let scheduler_path = dir.join("scheduler/scheduler_config.json");
        let scheduler = read_json(&scheduler_path)?;
        Ok(FluxPipeline {
            clip,
            t5,
            transformer,
            vae,
            vae_config,
            scheduler,
            dtype,
            device: device.clone(),
        })
    }

    /// Pixels per latent cell: 2 to the number of VAE down blocks minus one (8 for FLUX.1).
    pub fn vae_scale_factor(&self) -> usize {
        1 << (self.vae_config.block_out_channels.len() - 1)
    }

    /// The latent image's (channels, height, width) for a size in pixels; refuses sizes that do not pack.
    pub fn latent_shape(&self, height: usize, width: usize) -> Result<(usize, usize, usize)> {
        let multiple = self.vae_scale_factor() * 2;
        if height == 0 || width == 0 || height % multiple != 0 || width % multiple != 0 {
            return Err(FluxError::Size(format!(
                "{width}x{height}: width and height must be positive multiples of {multiple}"
            )));
        }
        let f = self.vae_scale_factor();
        Ok((self.vae_config.latent_channels, height / f, width / f))
    }

    /// T5 states (1, m, d) and the pooled CLIP vector (1, d) of a prompt's token ids.
    pub fn encode_prompt(&mut self, t5_tokens: &Tensor, clip_tokens: &Tensor) -> Result<(Tensor, Tensor)> {
        let t5 = self.t5.forward(t5_tokens)?;
        let pooled = self.clip.forward(clip_tokens)?;
        Ok((t5, pooled))
    }

    /// Denoises packed `noise` to packed latents with the prompt's encodings; `on_step(done, total)` is
    /// called after each step so servers can report progress.
    #[allow(clippy::too_many_arguments)]
    pub fn denoise(
        &self,
        t5_states: &Tensor,
        pooled: &Tensor,
        noise: &Tensor,
        height: usize,
        width: usize,
        steps: usize,
        guidance: f64,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor> {
        let (channels, h, w) = self.latent_shape(height, width)?;
        let batch = noise.dim(0)?;
        let expected = [batch, (h / 2) * (w / 2), channels * 4];
        if noise.dims() != expected {
            return Err(FluxError::Size(format!(
                "noise of shape {:?} for a {width}x{height} image; expected {expected:?}",
                noise.dims()
            )));
        }
        let img_ids = img_ids(h / 2, w / 2, &self.device)?
            .to_dtype(self.dtype)?
            .unsqueeze(0)?
            .repeat((batch, 1, 1))?;
        let txt = t5_states
            .repeat((batch / t5_states.dim(0)?, 1, 1))?
            .to_dtype(self.dtype)?;
        let txt_ids = Tensor::zeros((batch, txt.dim(1)?, 3), self.dtype, &self.device)?;
        let vec = pooled.repeat((batch / pooled.dim(0)?, 1))?.to_dtype(self.dtype)?;
        let guidance = Tensor::full(guidance as f32, batch, &self.device)?.to_dtype(self.dtype)?;
        let mut scheduler = FlowMatchEuler::new(&self.scheduler, steps, expected[1])?;
        let timesteps = scheduler.timesteps().to_vec();
        let mut latents = noise.to_dtype(self.dtype)?;
        for (i, t) in timesteps.iter().enumerate() {
            // The transformer takes σ: FluxPipeline passes `timestep / 1000`.
            let t = Tensor::full((t / 1000.0) as f32, batch, &self.device)?.to_dtype(self.dtype)?;
            let velocity =
                self.transformer
                    .forward(&latents, &img_ids, &txt, &txt_ids, &t, &vec, Some(&guidance))?;
            latents = scheduler.step(&velocity, i, &latents, None)?;
            on_step(i + 1, timesteps.len());
        }
        Ok(latents)
    }

    /// Decodes packed latents to an image (b, 3, height, width) with values in [0, 1].
    pub fn decode(&self, packed: &Tensor, height: usize, width: usize) -> Result<Tensor> {
        let (_, h, w) = self.latent_shape(height, width)?;
        let latents = unpack(packed, h, w)?;
        let latents =
            ((latents / self.vae_config.scaling_factor)? + self.vae_config.shift_factor.unwrap_or(0.0))?;
        let image = self.vae_decode_raw(&latents)?;
        Ok(((image / 2.0)? + 0.5)?.clamp(0f32, 1f32)?.to_dtype(DType::F32)?)
    }

    /// The VAE alone on latents already unscaled and unshifted, giving pixels in about [-1, 1]; for
    /// previews and checks.
    pub fn vae_decode_raw(&self, latents: &Tensor) -> Result<Tensor> {
        Ok(self.vae.decode(&latents.to_dtype(self.dtype)?)?)
    }

    /// The whole run: encode, denoise, decode. Returns the packed final latents and the image
    /// (b, 3, height, width) in [0, 1].
    pub fn generate(
        &mut self,
        request: &FluxRequest,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<(Tensor, Tensor)> {
        let (t5, pooled) = self.encode_prompt(request.t5_tokens, request.clip_tokens)?;
        let latents = self.denoise(
            &t5,
            &pooled,
            request.noise,
            request.height,
            request.width,
            request.steps,
            request.guidance,
            on_step,
        )?;
        let image = self.decode(&latents, request.height, request.width)?;
        Ok((latents, image))
    }
}

/// (rows · columns, 3) position ids (0, row, column) of packed latent tokens, in f32.
pub fn img_ids(rows: usize, columns: usize, device: &Device) -> Result<Tensor> {
    let ids: Vec<f32> = (0..rows)
        .flat_map(|r| (0..columns).flat_map(move |c| [0.0, r as f32, c as f32]))
        .collect();
    Ok(Tensor::from_vec(ids, (rows * columns, 3), device)?)
}

/// (b, c, h, w) latents to (b, h/2 · w/2, 4c) tokens of 2 × 2 patches (diffusers' `_pack_latents`).
pub fn pack(latents: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = latents.dims4()?;
    Ok(latents
        .reshape((b, c, h / 2, 2, w / 2, 2))?
        .permute((0, 2, 4, 1, 3, 5))?
        .reshape((b, (h / 2) * (w / 2), c * 4))?)
}

/// The inverse of [`pack`] for a latent image of `h` × `w`.
pub fn unpack(packed: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (b, _, d) = packed.dims3()?;
    let c = d / 4;
    Ok(packed
        .reshape((b, h / 2, w / 2, c, 2, 2))?
        .permute((0, 3, 1, 4, 2, 5))?
        .reshape((b, c, h, w))?)
}
