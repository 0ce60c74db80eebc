//! Stable Diffusion 1.x and 2.x: CLIP text encoder, UNet (4-channel, or 9-channel for inpainting) and
//! VAE, from a diffusers folder or a single-file checkpoint; txt2img, img2img and inpainting with
//! classifier-free guidance and any registered scheduler.

pub mod clip;
mod denoise;
pub(crate) mod image_inputs;
pub mod open_clip;
mod parts;
pub mod single_file;
pub mod tokenizer;
pub mod unet;
pub mod vae;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::layers::unet_2d::UNet2DConditionModel;
use artifacts_contract::{ImageBase, ImageVariant};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use crate::embeddings::ActiveEmbedding;
use crate::error::{Result, SdError};
use crate::loading::read_config;
use crate::lora::{ActiveLora, Component, LoraReport, Merged, Target};
use crate::noise::Noise;
use crate::pipeline::{BaseSpec, ImagePipeline, LoadOptions, ModelSource, PipelineInfo, ProgressFn};
use crate::request::{Defaults, ValidRequest};
use crate::schedulers::SchedulerConfig;
use clip::{ClipConfig, ClipTextEncoder, ExtraTokens};
pub use parts::Parts;
pub(crate) use parts::{sd15_clip, separate_vae, tensor_names};
use tokenizer::ClipTokenizer;
use unet::UnetConfig;
use vae::Vae;

/// The registry entry of SD 1.x and 2.x.
pub static BASE: BaseSpec = BaseSpec {
    name: "Stable Diffusion 1.x/2.x",
    bases: &[ImageBase::Sd1, ImageBase::Sd2],
    variants: &[ImageVariant::Normal, ImageVariant::Inpaint],
    detect,
    load,
};

/// SD 1.x or 2.x, from the UNet's cross-attention width (768 or 1024) or the single file's text encoder.
fn detect(source: &ModelSource) -> Option<ImageBase> {
    let base_of = |unet: &UnetConfig| match unet.cross_attention_dim {
        768 => Some(ImageBase::Sd1),
        1024 => Some(ImageBase::Sd2),
        // Tiny test pipelines and other small UNets with one text encoder load as SD 1.x.
        _ => None,
    };
    match source {
        ModelSource::Diffusers(folder) => {
            let unet: UnetConfig = read_config(&folder.join("unet/config.json")).ok()?;
            let text: ClipConfig = read_config(&folder.join("text_encoder/config.json")).ok()?;
            base_of(&unet).or((text.hidden_size == unet.cross_attention_dim).then_some(ImageBase::Sd1))
        }
        ModelSource::SingleFile { path, .. } => {
            let names = tensor_names(path)?;
            match single_file::layout(names.iter().map(String::as_str)) {
                single_file::Layout::Sd1 => Some(ImageBase::Sd1),
                single_file::Layout::Sd2 => Some(ImageBase::Sd2),
                single_file::Layout::Other => None,
            }
        }
    }
}

fn load(source: &ModelSource, options: &LoadOptions) -> Result<Box<dyn ImagePipeline>> {
    let parts = match source {
        ModelSource::Diffusers(folder) => Parts::from_diffusers(folder, &options.device)?,
        ModelSource::SingleFile { path, config } => {
            Parts::from_single_file(path, config.as_deref(), options.base, &options.device)?
        }
    };
    Ok(Box::new(SdPipeline::new(parts, options)?))
}

/// The models LoRAs change: the text encoder and the UNet, built from (possibly adapted) tensors.
pub struct SdModels {
    text_encoder: ClipTextEncoder,
    unet: UNet2DConditionModel,
}

/// The base tensors of the adaptable models, kept so LoRAs are merged into copies and never reloaded.
struct BaseWeights {
    text: (ClipConfig, HashMap<String, Tensor>),
    unet: (UnetConfig, HashMap<String, Tensor>),
}

/// A loaded SD 1.x/2.x pipeline.
pub struct SdPipeline {
    tokenizer: Option<ClipTokenizer>,
    models: Arc<SdModels>,
    base_weights: BaseWeights,
    adapted: Merged<SdModels>,
    unet_in_channels: usize,
    vae: Vae,
    scheduler: SchedulerConfig,
    info: PipelineInfo,
    device: Device,
    dtype: DType,
}

impl SdPipeline {
    /// Builds the models from their parts.
    pub fn new(parts: Parts, options: &LoadOptions) -> Result<Self> {
        let (device, dtype) = (&options.device, options.dtype);
        let (text_config, text_tensors) = parts.text_encoder;
        let tokenizer = parts
            .tokenizer
            .map(|folder| ClipTokenizer::load(&folder, text_config.max_position_embeddings))
            .transpose()?;
        let (unet_config, unet_tensors) = parts.unet;
        let cast = |map| crate::lora::cast(map, dtype, device);
        let base_weights = BaseWeights {
            text: (text_config.clone(), cast(text_tensors)?),
            unet: (unet_config.clone(), cast(unet_tensors)?),
        };
        let models = Arc::new(build_models(
            &base_weights,
            &base_weights.text.1,
            &base_weights.unet.1,
            dtype,
            device,
        )?);
        let (vae_config, vae_tensors) = match &options.vae {
            Some(path) => separate_vae(path, device)?,
            None => parts.vae,
        };
        let vae = Vae::new(vae_tensors, &vae_config, dtype, device)?;
        let mut scheduler = parts.scheduler;
        if let Some(prediction) = options.prediction_type {
            scheduler.prediction_type = prediction;
        }
        let base = options.base.unwrap_or(ImageBase::Sd1);
        let native = base.native_resolution();
        let defaults = options.defaults.clone().unwrap_or(Defaults {
            size: (native.width, native.height),
            steps: 25,
            cfg_scale: 7.0,
            scheduler: "Euler".into(),
            clip_skip: 1,
        });
        let info = PipelineInfo {
            base,
            model_name: options.model_name.clone(),
            defaults,
            max_clip_skip: text_config.num_hidden_layers as u32,
            inpaint_model: unet_config.in_channels == 9,
            loras: options.loras.clone(),
            model_hash: options.model_hash.clone(),
        };
        Ok(SdPipeline {
            tokenizer,
            models,
            base_weights,
            adapted: Merged::default(),
            unet_in_channels: unet_config.in_channels,
            vae,
            scheduler,
            info,
            device: device.clone(),
            dtype,
        })
    }

    /// The VAE, for tests that compare encoding and decoding alone.
    pub fn vae(&self) -> &Vae {
        &self.vae
    }

    /// The text encoder, for tests and for bases that share it.
    pub fn text_encoder(&self) -> &ClipTextEncoder {
        &self.models.text_encoder
    }

    /// The UNet, for tests that compare one call.
    pub fn unet(&self) -> &UNet2DConditionModel {
        &self.models.unet
    }

    /// The models with `loras` merged in: the plain ones when there are none, else built from copies of
    /// the adapted tensors (the last set is kept, so a run of requests with the same LoRAs merges once).
    pub fn models_for(&self, loras: &[ActiveLora]) -> Result<(Arc<SdModels>, Vec<LoraReport>)> {
        self.adapted
            .models_for(&self.models, &self.lora_targets(), loras, |maps| {
                build_models(&self.base_weights, &maps[0], &maps[1], self.dtype, &self.device)
            })
    }

    /// The text encoder and the UNet, as LoRAs see them.
    fn lora_targets(&self) -> [Target<'_>; 2] {
        let none = crate::lora::no_aliases();
        [
            Target {
                component: Component::Text(0),
                tensors: &self.base_weights.text.1,
                aliases: none,
                slices: crate::lora::no_slices(),
            },
            Target {
                component: Component::Denoiser,
                tensors: &self.base_weights.unet.1,
                aliases: none,
                slices: crate::lora::no_slices(),
            },
        ]
    }

    /// The plain text encoder's conditioning of a prompt whose words may name `embeddings` (clip skip
    /// as the UIs count it), for tests that compare the prompt encoding alone.
    pub fn encode_prompt(
        &self,
        prompt: &str,
        embeddings: &[ActiveEmbedding],
        clip_skip: usize,
    ) -> Result<Tensor> {
        let (tokens, extra) = self.tokens(prompt, embeddings)?;
        let encoder = &self.models.text_encoder;
        let out = encoder.forward_with(&tokens, extra.as_ref())?;
        Ok(out.with_clip_skip(encoder, clip_skip)?)
    }

    /// A prompt's token row, and the rows of the embeddings it names.
    fn tokens(&self, prompt: &str, embeddings: &[ActiveEmbedding]) -> Result<(Tensor, Option<ExtraTokens>)> {
        let tokenizer = self.tokenizer.as_ref().ok_or_else(|| {
            SdError::layout(
                Path::new(&self.info.model_name),
                "the model has no tokenizer/ folder",
            )
        })?;
        let width = self.base_weights.text.0.hidden_size;
        let (ids, extra) = tokenizer.encode_with(prompt, embeddings, (0, width))?;
        Ok((Tensor::new(ids, &self.device)?.unsqueeze(0)?, extra))
    }
}

impl ImagePipeline for SdPipeline {
    fn info(&self) -> &PipelineInfo {
        &self.info
    }

    fn prepare_loras(&self, loras: &[ActiveLora]) -> Result<Vec<LoraReport>> {
        Ok(self.models_for(loras)?.1)
    }

    fn check_loras(&self, loras: &[ActiveLora]) -> Result<Vec<LoraReport>> {
        crate::lora::check(&self.lora_targets(), loras)
    }

    fn generate_one(
        &self,
        request: &ValidRequest,
        index: u32,
        noise: &mut Noise,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Tensor> {
        let (cond, extra) = self.tokens(&request.prompt, &request.embeddings)?;
        let (uncond, uncond_extra) = self.tokens(&request.negative_prompt, &request.embeddings)?;
        let prompts = [(&cond, extra.as_ref()), (&uncond, uncond_extra.as_ref())];
        let latents = self.denoise_encoded(request, prompts, index, noise, progress)?;
        Ok(self.vae.decode(&latents)?.to_dtype(DType::F32)?.squeeze(0)?)
    }

    fn takes_embeddings(&self) -> bool {
        true
    }

    fn preview(&self, latents: &Tensor) -> Result<RgbImage> {
        denoise::preview(latents)
    }
}

impl SdPipeline {
    /// The whole generation from token rows instead of prompts: how tests match diffusers on given ids.
    /// Returns the decoded `(1, 3, h, w)` image in [-1, 1].
    pub fn generate_from_tokens(
        &self,
        request: &ValidRequest,
        cond: &Tensor,
        uncond: &Tensor,
        index: u32,
        noise: &mut Noise,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Tensor> {
        let latents = self.denoise_from_tokens(request, cond, uncond, index, noise, progress)?;
        Ok(self.vae.decode(&latents)?.to_dtype(DType::F32)?)
    }

    /// The final latents of a generation from token rows (before the VAE).
    pub fn denoise_from_tokens(
        &self,
        request: &ValidRequest,
        cond: &Tensor,
        uncond: &Tensor,
        index: u32,
        noise: &mut Noise,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Tensor> {
        self.denoise_encoded(request, [(cond, None), (uncond, None)], index, noise, progress)
    }

    /// The final latents from the prompt's and negative prompt's token rows with their embedding rows.
    fn denoise_encoded(
        &self,
        request: &ValidRequest,
        [cond, uncond]: [(&Tensor, Option<&ExtraTokens>); 2],
        index: u32,
        noise: &mut Noise,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Tensor> {
        let skip = request.clip_skip as usize;
        let (models, _) = self.models_for(&request.loras)?;
        let encode = |(tokens, extra): (&Tensor, Option<&ExtraTokens>)| -> Result<Tensor> {
            let out = models.text_encoder.forward_with(tokens, extra)?;
            Ok(out.with_clip_skip(&models.text_encoder, skip)?)
        };
        let guided = request.cfg_scale > 1.0;
        let context = if guided {
            Tensor::cat(&[encode(uncond)?, encode(cond)?], 0)?
        } else {
            encode(cond)?
        };
        denoise::run(
            self,
            &models.unet,
            request,
            &context.to_dtype(self.dtype)?,
            index,
            noise,
            progress,
        )
    }
}

/// Builds the text encoder and UNet from tensor maps (the base ones, or copies with LoRAs merged).
fn build_models(
    base: &BaseWeights,
    text: &HashMap<String, Tensor>,
    unet: &HashMap<String, Tensor>,
    dtype: DType,
    device: &Device,
) -> Result<SdModels> {
    let text_encoder = ClipTextEncoder::new(
        VarBuilder::from_tensors(text.clone(), dtype, device),
        &base.text.0,
    )?;
    let config = &base.unet.0;
    let unet = UNet2DConditionModel::new(
        VarBuilder::from_tensors(unet.clone(), dtype, device),
        config.in_channels,
        config.out_channels,
        false,
        config.to_candle(),
    )?;
    Ok(SdModels { text_encoder, unet })
}
