//! A whole Flux run as diffusers' `FluxPipeline`, `FluxImg2ImgPipeline` and `FluxInpaintPipeline` do it:
//! T5 states and the pooled CLIP vector from token ids, flow-matching Euler steps over packed latents
//! (from noise, or from an image noised to the strength's step, with a mask blending the kept part back
//! after each step), and the 16-channel VAE decode with Flux's shift and scale.
//!
//! Latents are "packed": each 2 × 2 patch of the (16, h, w) latent image becomes one token of 64 values,
//! with position ids (0, row, column) for the transformer's rotary embedding.

use super::vae::{FluxVae, VaeConfig};
use super::{FluxError, FluxTransformer, Result, TransformerConfig};
use crate::schedulers::{FlowMatchConfig, FlowMatchEuler, Scheduler};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::text_model::{Activation, ClipTextConfig, ClipTextTransformer};
use candle_transformers::models::t5::{self, T5EncoderModel};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The loaded parts of a Flux pipeline, ready to generate.
pub struct FluxPipeline {
    clip: ClipTextTransformer,
    /// CLIP's config and weights (in the model's dtype, shared with `clip`), kept for LoRAs.
    clip_parts: (ClipTextConfig, HashMap<String, Tensor>),
    clip_length: usize,
    // candle's T5 encoder takes `&mut self` to run; generations share the pipeline.
    t5: Mutex<T5EncoderModel>,
    transformer: Arc<FluxTransformer>,
    vae: FluxVae,
    scheduler: FlowMatchConfig,
    dtype: DType,
    device: Device,
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

/// What img2img and inpainting start from, in the transformer's latent space.
pub struct Init<'a> {
    /// The init image's latents, packed (1 or b, tokens, 64).
    pub latents: &'a Tensor,
    /// How much is repainted, in (0, 1]: the noisiest `(1 - strength)` of the steps are skipped.
    pub strength: f64,
    /// Inpainting: packed like the latents, 1 where to repaint and 0 where to keep the init image.
    pub mask: Option<&'a Tensor>,
}

/// The denoising part of a run: size, steps, guidance, the starting noise and, for img2img and
/// inpainting, the image to start from.
pub struct Denoise<'a> {
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Steps of the whole schedule (img2img runs the last ones).
    pub steps: usize,
    /// Guidance scale for dev-style transformers.
    pub guidance: f64,
    /// Unit Gaussian noise, packed (b, tokens, 64).
    pub noise: &'a Tensor,
    /// img2img or inpainting.
    pub init: Option<Init<'a>>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| FluxError::Io {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| FluxError::Config(format!("{}: {e}", path.display())))
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

/// candle's CLIP text model from transformers' weights, with or without the `text_model.` prefix that
/// transformers 5 dropped.
fn build_clip(
    config: &ClipTextConfig,
    tensors: HashMap<String, Tensor>,
    dtype: DType,
    device: &Device,
) -> Result<ClipTextTransformer> {
    let vb = VarBuilder::from_tensors(tensors, dtype, device);
    let vb = if vb.contains_tensor("text_model.embeddings.token_embedding.weight") {
        vb.pp("text_model")
    } else {
        vb
    };
    Ok(ClipTextTransformer::new(vb, config)?)
}

fn var_builder(path: &Path, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
    Ok(VarBuilder::from_tensors(
        super::read_safetensors(path, device)?,
        dtype,
        device,
    ))
}

/// FLUX.1-schnell's and FLUX.1-dev's `scheduler_config.json`, for a single-file transformer whose
/// config folder is of the other kind.
fn flux1_scheduler(guidance_embeds: bool) -> FlowMatchConfig {
    if guidance_embeds {
        FlowMatchConfig {
            shift: 3.0,
            use_dynamic_shifting: true,
            ..FlowMatchConfig::default()
        }
    } else {
        FlowMatchConfig::default()
    }
}

/// The first step img2img runs for a strength, as diffusers' Flux pipelines compute it (no rounding of
/// `steps · strength` before the subtraction, unlike SD's).
pub fn first_step(steps: usize, strength: f64) -> usize {
    let run = (steps as f64 * strength).min(steps as f64);
    (steps as f64 - run).max(0.0) as usize
}

impl FluxPipeline {
    /// Loads `text_encoder/` (CLIP), `text_encoder_2/` (T5), `transformer/`, `vae/` and `scheduler/`.
    pub fn load_diffusers_folder(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let transformer = FluxTransformer::load_diffusers_folder(&dir.join("transformer"), dtype, device)?;
        let scheduler = read_json(&dir.join("scheduler/scheduler_config.json"))?;
        Self::with_transformer(dir, transformer, scheduler, dtype, device)
    }

    /// A single-file transformer (either layout, any prefix) with the text encoders, VAE and scheduler of
    /// the diffusers folder `parts`. The transformer's shape is read from its tensors; only the rotary
    /// split, which tensors cannot tell, comes from `parts/transformer/config.json` (FLUX.1's without
    /// one). The folder's scheduler is used when its transformer is of the same kind (guidance or not),
    /// else FLUX.1's config of the file's kind.
    pub fn load_single_file(file: &Path, parts: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config_path = parts.join("transformer/config.json");
        let folder_config = if config_path.is_file() {
            Some(TransformerConfig::from_json(
                &std::fs::read_to_string(&config_path).map_err(|source| FluxError::Io {
                    path: config_path.display().to_string(),
                    source,
                })?,
            )?)
        } else {
            None
        };
        let tensors = super::weights::original_layout(super::read_safetensors(file, device)?)?;
        let config = match &folder_config {
            Some(folder) => TransformerConfig::infer_with_axes(&tensors, &folder.axes_dims_rope)?,
            None => TransformerConfig::infer(&tensors)?,
        };
        let scheduler = match &folder_config {
            Some(folder) if folder.guidance_embeds == config.guidance_embeds => {
                read_json(&parts.join("scheduler/scheduler_config.json"))?
            }
            _ => flux1_scheduler(config.guidance_embeds),
        };
        let transformer = FluxTransformer::from_tensors(tensors, Some(config), dtype, device)?;
        Self::with_transformer(parts, transformer, scheduler, dtype, device)
    }

    /// The text encoders and VAE of the diffusers folder `dir` around a loaded transformer.
    fn with_transformer(
        dir: &Path,
        transformer: FluxTransformer,
        scheduler: FlowMatchConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let clip_config: ClipConfig = read_json(&dir.join("text_encoder/config.json"))?;
        if clip_config.hidden_act != "quick_gelu" {
            return Err(FluxError::Config(format!(
                "CLIP hidden_act {:?}: only quick_gelu is supported",
                clip_config.hidden_act
            )));
        }
        let clip_tensors = super::read_safetensors(&weights_file(&dir.join("text_encoder"))?, device)?
            .into_iter()
            .map(|(k, v)| {
                let v = crate::cpu::linear::kept_layout(&k, v.to_dtype(dtype)?)?;
                Ok((k, v))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        let clip_config = ClipTextConfig {
            vocab_size: clip_config.vocab_size,
            embed_dim: clip_config.hidden_size,
            activation: Activation::QuickGelu,
            intermediate_size: clip_config.intermediate_size,
            max_position_embeddings: clip_config.max_position_embeddings,
            pad_with: None,
            num_hidden_layers: clip_config.num_hidden_layers,
            num_attention_heads: clip_config.num_attention_heads,
            projection_dim: clip_config.projection_dim,
        };
        let clip = build_clip(&clip_config, clip_tensors.clone(), dtype, device)?;
        let t5_config: t5::Config = read_json(&dir.join("text_encoder_2/config.json"))?;
        let t5_vb = var_builder(&weights_file(&dir.join("text_encoder_2"))?, dtype, device)?;
        let t5 = T5EncoderModel::load(t5_vb, &t5_config)?;
        let vae = Self::load_vae(&dir.join("vae"), dtype, device)?;
        Ok(FluxPipeline {
            clip,
            clip_length: clip_config.max_position_embeddings,
            clip_parts: (clip_config, clip_tensors),
            t5: Mutex::new(t5),
            transformer: Arc::new(transformer),
            vae,
            scheduler,
            dtype,
            device: device.clone(),
        })
    }

    /// A diffusers `vae/` folder (`config.json` and the weights).
    pub fn load_vae(dir: &Path, dtype: DType, device: &Device) -> Result<FluxVae> {
        let config: VaeConfig = read_json(&dir.join("config.json"))?;
        let tensors = super::read_safetensors(&weights_file(dir)?, device)?;
        FluxVae::new(tensors, &config, dtype, device)
    }

    /// Replaces the VAE (a separate VAE named per worker).
    pub fn set_vae(&mut self, vae: FluxVae) {
        self.vae = vae;
    }

    /// The VAE, for img2img's encoding and for checks.
    pub fn vae(&self) -> &FluxVae {
        &self.vae
    }

    /// The transformer, e.g. to ask whether it takes a guidance scale.
    pub fn transformer(&self) -> &FluxTransformer {
        &self.transformer
    }

    /// The transformer, shared: what a request without LoRAs runs.
    pub fn shared_transformer(&self) -> &Arc<FluxTransformer> {
        &self.transformer
    }

    /// The CLIP token row length (77 for FLUX.1).
    pub fn clip_length(&self) -> usize {
        self.clip_length
    }

    /// Pixels per latent cell (8 for FLUX.1).
    pub fn vae_scale_factor(&self) -> usize {
        self.vae.config().scale()
    }

    /// The latent image's (channels, height, width) for a size in pixels; refuses sizes that do not pack.
    pub fn latent_shape(&self, height: usize, width: usize) -> Result<(usize, usize, usize)> {
        let multiple = self.vae_scale_factor() * 2;
        if height == 0 || width == 0 || !height.is_multiple_of(multiple) || !width.is_multiple_of(multiple) {
            return Err(FluxError::Size(format!(
                "{width}x{height}: width and height must be positive multiples of {multiple}"
            )));
        }
        let f = self.vae_scale_factor();
        Ok((self.vae.config().latent_channels, height / f, width / f))
    }

    /// T5 states (1, m, d) and the pooled CLIP vector (1, d) of a prompt's token ids.
    pub fn encode_prompt(&self, t5_tokens: &Tensor, clip_tokens: &Tensor) -> Result<(Tensor, Tensor)> {
        self.encode_prompt_with(None, t5_tokens, clip_tokens)
    }

    /// [`FluxPipeline::encode_prompt`] with another CLIP of the same shape (one with LoRAs merged).
    pub fn encode_prompt_with(
        &self,
        clip: Option<&ClipTextTransformer>,
        t5_tokens: &Tensor,
        clip_tokens: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let t5 = self
            .t5
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .forward(t5_tokens)?;
        let pooled = clip.unwrap_or(&self.clip).forward(clip_tokens)?;
        Ok((t5, pooled))
    }

    /// CLIP's weights, as LoRAs see them.
    pub fn clip_tensors(&self) -> &HashMap<String, Tensor> {
        &self.clip_parts.1
    }

    /// CLIP rebuilt around other weights of the same names and shapes (a LoRA merged in).
    pub fn clip_with(&self, tensors: HashMap<String, Tensor>) -> Result<ClipTextTransformer> {
        build_clip(&self.clip_parts.0, tensors, self.dtype, &self.device)
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
        let job = Denoise {
            height,
            width,
            steps,
            guidance,
            noise,
            init: None,
        };
        self.run(t5_states, pooled, &job, &mut |done, total, _| {
            on_step(done, total);
            Ok::<(), FluxError>(())
        })
    }

    /// The denoising loop of txt2img, img2img and inpainting. `on_step(done, total, packed latents)` runs
    /// after each step; its error (a cancellation) stops the loop.
    pub fn run<E: From<FluxError>>(
        &self,
        t5_states: &Tensor,
        pooled: &Tensor,
        job: &Denoise<'_>,
        on_step: &mut dyn FnMut(usize, usize, &Tensor) -> std::result::Result<(), E>,
    ) -> std::result::Result<Tensor, E> {
        self.run_with(&self.transformer, t5_states, pooled, job, on_step)
    }

    /// [`FluxPipeline::run`] with another transformer of the same shape (one with LoRAs merged).
    pub fn run_with<E: From<FluxError>>(
        &self,
        transformer: &FluxTransformer,
        t5_states: &Tensor,
        pooled: &Tensor,
        job: &Denoise<'_>,
        on_step: &mut dyn FnMut(usize, usize, &Tensor) -> std::result::Result<(), E>,
    ) -> std::result::Result<Tensor, E> {
        let (channels, h, w) = self.latent_shape(job.height, job.width)?;
        let noise = job.noise;
        let batch = noise.dim(0).map_err(FluxError::from)?;
        let expected = [batch, (h / 2) * (w / 2), channels * 4];
        if noise.dims() != expected {
            return Err(FluxError::Size(format!(
                "noise of shape {:?} for a {}x{} image; expected {expected:?}",
                noise.dims(),
                job.width,
                job.height
            ))
            .into());
        }
        let dt = self.dtype;
        let tensors = || -> Result<_> {
            let img_ids = img_ids(h / 2, w / 2, &self.device)?
                .to_dtype(dt)?
                .unsqueeze(0)?
                .repeat((batch, 1, 1))?;
            let txt = t5_states
                .repeat((batch / t5_states.dim(0)?, 1, 1))?
                .to_dtype(dt)?;
            let txt_ids = Tensor::zeros((batch, txt.dim(1)?, 3), dt, &self.device)?;
            let vec = pooled.repeat((batch / pooled.dim(0)?, 1))?.to_dtype(dt)?;
            let guidance = Tensor::full(job.guidance as f32, batch, &self.device)?.to_dtype(dt)?;
            Ok((img_ids, txt, txt_ids, vec, guidance, noise.to_dtype(dt)?))
        };
        let (img_ids, txt, txt_ids, vec, guidance, noise) = tensors()?;
        let mut scheduler =
            FlowMatchEuler::new(&self.scheduler, job.steps, expected[1]).map_err(FluxError::from)?;
        let timesteps = scheduler.timesteps().to_vec();
        let init = match &job.init {
            Some(init) => {
                let latents = init.latents.to_dtype(dt).map_err(FluxError::from)?;
                let mask = init
                    .mask
                    .map(|m| m.to_dtype(dt))
                    .transpose()
                    .map_err(FluxError::from)?;
                Some((latents, mask, first_step(job.steps, init.strength)))
            }
            None => None,
        };
        let start = init.as_ref().map_or(0, |(_, _, start)| *start);
        scheduler.begin_at(start).map_err(FluxError::from)?;
        let mut latents = match &init {
            Some((image, _, start)) => scheduler
                .add_noise(image, &noise, *start)
                .map_err(FluxError::from)?,
            None => noise.clone(),
        };
        let total = timesteps.len() - start;
        for step in start..timesteps.len() {
            let mut advance = || -> Result<Tensor> {
                // The transformer takes σ: FluxPipeline passes `timestep / 1000`.
                let t = Tensor::full((timesteps[step] / 1000.0) as f32, batch, &self.device)?.to_dtype(dt)?;
                let velocity =
                    transformer.forward(&latents, &img_ids, &txt, &txt_ids, &t, &vec, Some(&guidance))?;
                let mut next = scheduler.step(&velocity, step, &latents, None)?;
                if let Some((image, Some(mask), _)) = &init {
                    // Outside the mask, the init image noised to the next step's level (clean at the end).
                    let kept = if step + 1 < timesteps.len() {
                        scheduler.add_noise(image, &noise, step + 1)?
                    } else {
                        image.clone()
                    };
                    next = (kept.broadcast_mul(&(1.0 - mask)?)? + next.broadcast_mul(mask)?)?;
                }
                Ok(next)
            };
            latents = advance()?;
            on_step(step - start + 1, total, &latents)?;
        }
        Ok(latents)
    }

    /// Decodes packed latents to an image (b, 3, height, width) with values in [0, 1].
    pub fn decode(&self, packed: &Tensor, height: usize, width: usize) -> Result<Tensor> {
        let image = self.decode_signed(packed, height, width)?;
        Ok(((image / 2.0)? + 0.5)?.clamp(0f32, 1f32)?)
    }

    /// Decodes packed latents to an image (b, 3, height, width) in about [-1, 1], as the VAE gives it.
    pub fn decode_signed(&self, packed: &Tensor, height: usize, width: usize) -> Result<Tensor> {
        let (_, h, w) = self.latent_shape(height, width)?;
        self.vae.decode(&unpack(packed, h, w)?)
    }

    /// The VAE alone on latents already unscaled and unshifted, giving pixels in about [-1, 1]; for
    /// checks against diffusers' `vae.decode`.
    pub fn vae_decode_raw(&self, latents: &Tensor) -> Result<Tensor> {
        self.vae.decode_raw(latents)
    }

    /// The whole txt2img run from token ids: encode, denoise, decode. Returns the packed final latents and
    /// the image (b, 3, height, width) in [0, 1].
    pub fn generate(
        &self,
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
