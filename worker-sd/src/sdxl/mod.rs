//! SDXL (and SDXL Turbo): two CLIP text encoders, the UNet with SDXL's added `text_time` conditioning
//! and the VAE, from a diffusers folder or a single-file checkpoint; txt2img, img2img and inpainting
//! (4-channel with mask blending, or a 9-channel inpainting UNet) with classifier-free guidance and any
//! registered scheduler, checked against diffusers on a tiny random SDXL pipeline.
//!
//! SDXL conditions on the concatenated penultimate hidden states of two text encoders (CLIP ViT-L, 768 wide,
//! and OpenCLIP bigG, 1280 wide, giving 2048) plus the second encoder's projected pooled output and six
//! size/crop ids, which [`unet::Unet`] adds to the timestep embedding. SDXL Turbo is the same network
//! distilled for 1 to 4 steps without classifier-free guidance (CFG 0, Euler a with trailing timesteps):
//! only the defaults and the schedule differ, which the catalog entry's `ImageConfig` and the model's
//! `scheduler/scheduler_config.json` carry.

mod adapt;
pub mod parts;
pub mod pipeline;
pub mod text;
pub mod unet;

use std::path::Path;
use std::sync::Arc;

use artifacts_contract::{Distillation, ImageBase, ImageConfig, ImageVariant};
use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use crate::error::SdError;
use crate::loading::read_config;
use crate::lora::{ActiveLora, LoraReport};
use crate::noise::Noise;
use crate::pipeline::{BaseSpec, ImagePipeline, LoadOptions, ModelSource, PipelineInfo, ProgressFn};
use crate::request::ValidRequest;
use crate::schedulers::{SchedulerConfig, TimestepSpacing};
use crate::sd::vae::Vae;
use adapt::SdxlBase;
pub use adapt::SdxlModels;
pub use parts::Parts;
use pipeline::SdxlPrompt;
use text::TextEncoders;
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

/// Shorthand for SDXL model results.
pub type Result<T> = std::result::Result<T, SdxlError>;

impl From<SdxlError> for SdError {
    fn from(error: SdxlError) -> Self {
        match error {
            SdxlError::Io { path, source } => SdError::Io {
                path: path.into(),
                source,
            },
            SdxlError::Config(message) => SdError::layout(Path::new("unet/config.json"), message),
            SdxlError::Scheduler(e) => SdError::Scheduler(e),
            SdxlError::Tensor(e) => SdError::Tensor(e),
        }
    }
}

/// The registry entry of SDXL (SDXL Turbo and the SDXL lines, Pony and Illustrious, included).
pub static BASE: BaseSpec = BaseSpec {
    name: "Stable Diffusion XL",
    bases: &[ImageBase::Sdxl],
    variants: &[ImageVariant::Normal, ImageVariant::Inpaint],
    detect,
    load,
};

/// SDXL from a diffusers folder (a `text_time` UNet and a second text encoder) or a single file
/// (`conditioner.embedders.1.*` beside the UNet).
fn detect(source: &ModelSource) -> Option<ImageBase> {
    match source {
        ModelSource::Diffusers(folder) => {
            let unet: UnetConfig = read_config(&folder.join("unet/config.json")).ok()?;
            let sdxl = unet.addition_embed_type.as_deref() == Some("text_time")
                && folder.join("text_encoder_2").is_dir();
            sdxl.then_some(ImageBase::Sdxl)
        }
        ModelSource::SingleFile { path, .. } => {
            let names = crate::sd::tensor_names(path)?;
            crate::sd::single_file::is_sdxl(names.iter().map(String::as_str)).then_some(ImageBase::Sdxl)
        }
    }
}

fn load(source: &ModelSource, options: &LoadOptions) -> crate::Result<Box<dyn ImagePipeline>> {
    let parts = match source {
        ModelSource::Diffusers(folder) => Parts::from_diffusers(folder, &options.device)?,
        ModelSource::SingleFile { path, config } => {
            // A distilled entry (few steps, no guidance) runs on trailing timesteps.
            let few_step = options
                .defaults
                .as_ref()
                .is_some_and(|d| d.steps <= 8 && d.cfg_scale <= 2.0);
            Parts::from_single_file(path, config.as_deref(), few_step, &options.device)?
        }
    };
    Ok(Box::new(SdxlPipeline::new(parts, options)?))
}

/// A loaded SDXL pipeline.
pub struct SdxlPipeline {
    models: Arc<SdxlModels>,
    base: SdxlBase,
    unet_in_channels: usize,
    vae: Vae,
    vae_dtype: DType,
    scheduler: SchedulerConfig,
    info: PipelineInfo,
    device: Device,
    dtype: DType,
}

impl SdxlPipeline {
    /// Builds the models from their parts.
    pub fn new(parts: Parts, options: &LoadOptions) -> crate::Result<Self> {
        let (device, dtype) = (&options.device, options.dtype);
        let unet_config = parts.unet.0.clone();
        let (base, models) = SdxlBase::new(
            [parts.text_encoder, parts.text_encoder_2],
            parts.unet,
            parts.tokenizers,
            parts.force_zeros_for_empty_prompt,
            dtype,
            device,
        )?;
        let text = &models.text;
        // SDXL's VAE overflows in float16: run it in float32 when its config says so (a separate VAE
        // folder's own config decides: the fp16-fixed VAE runs in float16).
        let force_upcast = match &options.vae {
            Some(folder) if folder.is_dir() => parts::force_upcast(folder),
            _ => parts.vae_force_upcast,
        };
        let vae_dtype = if force_upcast { DType::F32 } else { dtype };
        let (mut vae_config, vae_tensors) = match &options.vae {
            Some(path) => crate::sd::separate_vae(path, device)?,
            None => parts.vae,
        };
        if options.vae.as_ref().is_some_and(|p| p.is_file()) {
            // A bare VAE file carries no config: it is SDXL's.
            vae_config.scaling_factor = parts::SDXL_VAE_SCALING;
        }
        let vae = Vae::new(vae_tensors, &vae_config, vae_dtype, device)?;
        let mut scheduler = parts.scheduler;
        if let Some(prediction) = options.prediction_type {
            scheduler.prediction_type = prediction;
        }
        // The contract's defaults for SDXL, or for SDXL Turbo when the schedule is Turbo's (trailing).
        let turbo = scheduler.timestep_spacing == Some(TimestepSpacing::Trailing);
        let defaults = options.defaults.clone().unwrap_or_else(|| {
            let mut config = ImageConfig::new(ImageBase::Sdxl);
            if turbo {
                config.distillation = Some(Distillation::Turbo);
                config.samplers = vec!["Euler a".into()];
            }
            crate::resolve::defaults(&config)
        });
        let info = PipelineInfo {
            base: ImageBase::Sdxl,
            model_name: options.model_name.clone(),
            defaults,
            max_clip_skip: text.max_clip_skip(),
            inpaint_model: unet_config.in_channels == 9,
            loras: options.loras.clone(),
            model_hash: options.model_hash.clone(),
        };
        Ok(SdxlPipeline {
            models: Arc::new(models),
            base,
            unet_in_channels: unet_config.in_channels,
            vae,
            vae_dtype,
            scheduler,
            info,
            device: device.clone(),
            dtype,
        })
    }

    /// Both text encoders, for tests that compare the prompt encoding alone.
    pub fn text(&self) -> &TextEncoders {
        &self.models.text
    }

    /// The UNet, for tests that compare one call.
    pub fn unet(&self) -> &Unet {
        &self.models.unet
    }

    /// The models with `loras` merged (the plain ones when there are none), and what each applied.
    pub fn models_for(&self, loras: &[ActiveLora]) -> crate::Result<(Arc<SdxlModels>, Vec<LoraReport>)> {
        self.base.models_for(&self.models, loras)
    }

    /// The VAE.
    pub fn vae(&self) -> &Vae {
        &self.vae
    }

    /// Replaces the noise schedule (how a test runs Turbo's trailing Euler a on the same weights).
    pub fn set_scheduler(&mut self, scheduler: SchedulerConfig) {
        self.scheduler = scheduler;
    }

    /// The final latents of one image from given prompt encodings (before the VAE).
    pub fn denoise(
        &self,
        request: &ValidRequest,
        positive: &SdxlPrompt,
        negative: &SdxlPrompt,
        index: u32,
        noise: &mut Noise,
        progress: &mut ProgressFn<'_>,
    ) -> crate::Result<Tensor> {
        let (models, _) = self.models_for(&request.loras)?;
        pipeline::run(
            self,
            &models.unet,
            request,
            positive,
            negative,
            index,
            noise,
            progress,
        )
    }

    /// The final latents of one image from the request's prompts.
    pub fn denoise_prompts(
        &self,
        request: &ValidRequest,
        index: u32,
        noise: &mut Noise,
        progress: &mut ProgressFn<'_>,
    ) -> crate::Result<Tensor> {
        let (models, _) = self.models_for(&request.loras)?;
        let positive = models.text.encode_with(
            &request.prompt,
            &request.embeddings,
            request.clip_skip,
            &self.device,
        )?;
        let negative = models.text.negative_with(
            &request.negative_prompt,
            &request.embeddings,
            &positive,
            request.clip_skip,
            &self.device,
        )?;
        self.denoise(request, &positive, &negative, index, noise, progress)
    }

    /// Image `(b, 3, h, w)` in [-1, 1] -> scaled latents, in the VAE's dtype and back.
    fn encode(&self, image: &Tensor) -> crate::Result<Tensor> {
        let latents = self.vae.encode(&image.to_dtype(self.vae_dtype)?)?;
        Ok(latents.to_dtype(self.dtype)?)
    }

    /// Scaled latents -> image `(b, 3, h, w)` in [-1, 1], float32.
    pub fn decode(&self, latents: &Tensor) -> crate::Result<Tensor> {
        Ok(self
            .vae
            .decode(&latents.to_dtype(self.vae_dtype)?)?
            .to_dtype(DType::F32)?)
    }
}

impl ImagePipeline for SdxlPipeline {
    fn info(&self) -> &PipelineInfo {
        &self.info
    }

    fn prepare_loras(&self, loras: &[ActiveLora]) -> crate::Result<Vec<LoraReport>> {
        Ok(self.models_for(loras)?.1)
    }

    fn check_loras(&self, loras: &[ActiveLora]) -> crate::Result<Vec<LoraReport>> {
        crate::lora::check(&self.base.lora_targets(), loras)
    }

    fn takes_embeddings(&self) -> bool {
        true
    }

    fn generate_one(
        &self,
        request: &ValidRequest,
        index: u32,
        noise: &mut Noise,
        progress: &mut ProgressFn<'_>,
    ) -> crate::Result<Tensor> {
        let latents = self.denoise_prompts(request, index, noise, progress)?;
        Ok(self.decode(&latents)?.squeeze(0)?)
    }

    fn preview(&self, latents: &Tensor) -> crate::Result<RgbImage> {
        pipeline::preview(latents)
    }
}
