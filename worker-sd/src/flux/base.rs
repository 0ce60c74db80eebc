//! Flux behind the worker's [`ImagePipeline`] seam: recognizing FLUX.1 files, loading schnell or dev
//! (diffusers folder, or a single-file transformer with a diffusers folder for the rest), and turning a
//! validated request into an image with the prompt tokenized by CLIP and T5.
//!
//! Flux differs from SD in what a request means: `cfg_scale` is dev's embedded guidance (one transformer
//! call per step, no classifier-free guidance) and is ignored by schnell, which has none; a negative
//! prompt is refused, since nothing would read it; the sampler is flow-matching Euler (`Euler` names the
//! same for a flow model, as ComfyUI and Forge call it).

use std::path::Path;
use std::sync::Arc;

use artifacts_contract::{Distillation, ImageBase, ImageConfig, ImageVariant};
use candle_core::{DType, Device, Tensor};
use image::{GrayImage, RgbImage};

use super::pipeline::{Denoise, FluxPipeline, Init, pack, unpack};
use super::tokenizer::T5Tokenizer;
use candle_transformers::models::clip::text_model::ClipTextTransformer;

use super::{FluxError, FluxTransformer};
use crate::error::{Result, SdError};
use crate::lora::{ActiveLora, Component, LoraReport, Merged, Target};
use crate::noise::Noise;
use crate::pipeline::{
    BaseSpec, ImagePipeline, LoadOptions, ModelSource, PipelineInfo, Progress, ProgressFn,
};
use crate::request::{Defaults, ValidRequest};
use crate::sd::tokenizer::ClipTokenizer;

/// The models LoRAs change: the transformer, and CLIP when a LoRA set adapts it (`None`: the pipeline's).
pub struct FluxModels {
    /// The transformer.
    pub transformer: Arc<FluxTransformer>,
    /// CLIP with the set merged.
    pub clip: Option<ClipTextTransformer>,
}

/// The registry entry of FLUX.1 schnell and dev.
pub static BASE: BaseSpec = BaseSpec {
    name: "Flux.1 (schnell, dev)",
    bases: &[ImageBase::Flux],
    variants: &[ImageVariant::Normal, ImageVariant::Inpaint],
    detect,
    load,
};

/// The scheduler a Flux request runs with, by its registered name.
const FLOW_EULER: &str = "Flow Match Euler";
/// Sampler names a Flux request may give: both mean Euler steps along the flow.
const FLUX_SAMPLERS: &[&str] = &[FLOW_EULER, "Euler"];
/// T5 rows for FLUX.1-schnell and FLUX.1-dev (`max_sequence_length` of their model cards).
const T5_LENGTH_SCHNELL: usize = 256;
const T5_LENGTH_DEV: usize = 512;

/// A diffusers folder whose transformer is `FluxTransformer2DModel`, or a single file with Flux tensors.
fn detect(source: &ModelSource) -> Option<ImageBase> {
    let flux = match source {
        ModelSource::Diffusers(folder) => {
            let text = std::fs::read_to_string(folder.join("transformer/config.json")).ok()?;
            let config: serde_json::Value = serde_json::from_str(&text).ok()?;
            config["_class_name"] == "FluxTransformer2DModel"
        }
        ModelSource::SingleFile { path, .. } => {
            let names = super::weights::safetensors_names(path)?;
            super::weights::names_are_flux(names.iter().map(String::as_str))
        }
    };
    flux.then_some(ImageBase::Flux)
}

/// Load-time Flux errors as the worker's, naming the model file or folder.
fn at(path: &Path, error: FluxError) -> SdError {
    match error {
        FluxError::MissingTensor(_) | FluxError::Layout(_) | FluxError::Config(_) => {
            SdError::layout(path, error.to_string())
        }
        error => error.into(),
    }
}

impl From<FluxError> for SdError {
    fn from(error: FluxError) -> Self {
        match error {
            FluxError::Io { path, source } => SdError::Io {
                path: path.into(),
                source,
            },
            FluxError::NotSafetensors(path) => SdError::layout(Path::new(&path), "no .safetensors weights"),
            FluxError::Size(message) => SdError::invalid("width", message),
            FluxError::Scheduler(e) => SdError::Scheduler(e),
            FluxError::Tensor(e) => SdError::Tensor(e),
            e @ (FluxError::MissingTensor(_) | FluxError::Layout(_) | FluxError::Config(_)) => {
                SdError::layout(Path::new("Flux transformer"), e.to_string())
            }
        }
    }
}

fn load(source: &ModelSource, options: &LoadOptions) -> Result<Box<dyn ImagePipeline>> {
    Ok(Box::new(FluxImagePipeline::load(source, options)?))
}

/// A loaded FLUX.1 schnell or dev pipeline with its tokenizers.
pub struct FluxImagePipeline {
    pipe: FluxPipeline,
    /// diffusers' names of the transformer's modules, for diffusers and ai-toolkit LoRAs.
    names: super::lora::DiffusersNames,
    /// The models of a request without LoRAs: the pipeline's own.
    plain: Arc<FluxModels>,
    adapted: Merged<FluxModels>,
    clip_tokenizer: ClipTokenizer,
    t5_tokenizer: T5Tokenizer,
    info: PipelineInfo,
    device: Device,
}

impl FluxImagePipeline {
    /// Loads a diffusers folder, or a single-file transformer with `config` naming the diffusers folder
    /// that provides the text encoders, tokenizers, VAE and scheduler.
    pub fn load(source: &ModelSource, options: &LoadOptions) -> Result<Self> {
        // FLUX.1 and T5 overflow in f16; bf16 is what they were trained in.
        let dtype = match options.dtype {
            DType::F16 => DType::BF16,
            dtype => dtype,
        };
        let device = &options.device;
        let (mut pipe, parts) = match source {
            ModelSource::Diffusers(folder) => (
                FluxPipeline::load_diffusers_folder(folder, dtype, device).map_err(|e| at(folder, e))?,
                folder.clone(),
            ),
            ModelSource::SingleFile {
                path,
                config: Some(folder),
            } => (
                FluxPipeline::load_single_file(path, folder, dtype, device).map_err(|e| at(path, e))?,
                folder.clone(),
            ),
            ModelSource::SingleFile { path, config: None } => {
                return Err(SdError::layout(
                    path,
                    "a single-file Flux checkpoint holds the transformer only: give a diffusers FLUX.1 \
                     folder as its config (--config-folder) for the CLIP and T5 text encoders \
                     (text_encoder/, text_encoder_2/), their tokenizers (tokenizer/, tokenizer_2/), \
                     the VAE (vae/) and the scheduler (scheduler/)",
                ));
            }
        };
        if let Some(vae) = &options.vae {
            if !vae.join("config.json").is_file() {
                return Err(SdError::layout(
                    vae,
                    "a separate Flux VAE must be a diffusers vae/ folder with its config.json",
                ));
            }
            pipe.set_vae(FluxPipeline::load_vae(vae, dtype, device).map_err(|e| at(vae, e))?);
        }
        let guidance = pipe.transformer().config().guidance_embeds;
        let clip_tokenizer = ClipTokenizer::load(&parts.join("tokenizer"), pipe.clip_length())?;
        let t5_length = if guidance {
            T5_LENGTH_DEV
        } else {
            T5_LENGTH_SCHNELL
        };
        let t5_tokenizer = T5Tokenizer::load(&parts.join("tokenizer_2"), t5_length)?;
        let info = PipelineInfo {
            base: ImageBase::Flux,
            model_name: options.model_name.clone(),
            defaults: defaults(guidance, options.defaults.as_ref()),
            max_clip_skip: 1,
            inpaint_model: false,
            loras: options.loras.clone(),
            model_hash: options.model_hash.clone(),
        };
        Ok(FluxImagePipeline {
            names: super::lora::diffusers_names(pipe.transformer()),
            plain: Arc::new(FluxModels {
                transformer: pipe.shared_transformer().clone(),
                clip: None,
            }),
            adapted: Merged::default(),
            pipe,
            clip_tokenizer,
            t5_tokenizer,
            info,
            device: device.clone(),
        })
    }

    /// The transformer (its original modules, and diffusers' names for them) and CLIP, as LoRAs see them.
    fn lora_targets(&self) -> [Target<'_>; 2] {
        [
            Target {
                component: Component::Denoiser,
                tensors: self.pipe.transformer().tensors(),
                aliases: &self.names.aliases,
                slices: &self.names.slices,
            },
            Target {
                component: Component::Text(0),
                tensors: self.pipe.clip_tensors(),
                aliases: crate::lora::no_aliases(),
                slices: crate::lora::no_slices(),
            },
        ]
    }

    /// The transformer and CLIP with `loras` merged (the plain ones when there are none), and what each
    /// LoRA applied.
    pub fn models_for(&self, loras: &[ActiveLora]) -> Result<(Arc<FluxModels>, Vec<LoraReport>)> {
        self.adapted
            .models_for(&self.plain, &self.lora_targets(), loras, |maps| {
                Ok(FluxModels {
                    transformer: Arc::new(self.plain.transformer.with_tensors(maps[0].clone())?),
                    clip: Some(self.pipe.clip_with(maps[1].clone())?),
                })
            })
    }

    /// The Flux pipeline under the seam, for tests and benchmarks that drive it from token ids.
    pub fn pipeline(&self) -> &FluxPipeline {
        &self.pipe
    }

    /// The T5 and CLIP token rows of a prompt, as `FluxPipeline` tokenizes it.
    pub fn tokens(&self, prompt: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        Ok((
            self.t5_tokenizer.encode(prompt)?,
            self.clip_tokenizer.encode(prompt)?,
        ))
    }

    /// Checks what SD accepts but Flux cannot use, naming the field.
    fn check(&self, request: &ValidRequest) -> Result<()> {
        if !request.negative_prompt.trim().is_empty() {
            return Err(SdError::invalid(
                "negative_prompt",
                "Flux has no negative prompt (its guidance is distilled into the model; cfg_scale sets \
                 FLUX.1-dev's guidance); leave it empty",
            ));
        }
        if !FLUX_SAMPLERS.contains(&request.scheduler.as_str()) {
            return Err(SdError::invalid(
                "scheduler",
                format!(
                    "Flux samples along a flow with {FLOW_EULER} (or `Euler`); {} is for noise-predicting models",
                    request.scheduler
                ),
            ));
        }
        let multiple = self.pipe.vae_scale_factor() * 2;
        for (field, value) in [("width", request.width), ("height", request.height)] {
            if !(value as usize).is_multiple_of(multiple) {
                return Err(SdError::invalid(
                    field,
                    format!("must be a multiple of {multiple} for Flux, got {value}"),
                ));
            }
        }
        Ok(())
    }
}

/// Request defaults: the catalog's when it gave them, else the contract's for the base and distillation
/// (schnell when the transformer has no guidance embedding); the sampler is always a flow one.
fn defaults(guidance: bool, catalog: Option<&Defaults>) -> Defaults {
    let mut defaults = match catalog {
        Some(defaults) => defaults.clone(),
        None => {
            let mut config = ImageConfig::new(ImageBase::Flux);
            config.distillation = (!guidance).then_some(Distillation::Schnell);
            config.samplers = vec![FLOW_EULER.to_string()];
            crate::resolve::defaults(&config)
        }
    };
    let flow =
        crate::schedulers::find(&defaults.scheduler).is_ok_and(|spec| FLUX_SAMPLERS.contains(&spec.name));
    if !flow {
        defaults.scheduler = FLOW_EULER.to_string();
    }
    defaults.clip_skip = 1;
    defaults
}

/// An inpainting mask at latent size, packed like the latents: 1 where to repaint (white ≥ 127.5, as
/// diffusers binarizes it), nearest-neighbour downscaled as `torch.nn.functional.interpolate`.
fn mask_latents(mask: &GrayImage, channels: usize, h: usize, w: usize, device: &Device) -> Result<Tensor> {
    let (width, height) = mask.dimensions();
    let full = Tensor::from_vec(
        mask.as_raw().clone(),
        (1, 1, height as usize, width as usize),
        device,
    )?
    .to_dtype(DType::F32)?
    .ge(127.5)?
    .to_dtype(DType::F32)?;
    let small = full.upsample_nearest2d(h, w)?.repeat((1, channels, 1, 1))?;
    Ok(pack(&small)?)
}

impl ImagePipeline for FluxImagePipeline {
    fn info(&self) -> &PipelineInfo {
        &self.info
    }

    fn generate_one(
        &self,
        request: &ValidRequest,
        index: u32,
        noise: &mut Noise,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Tensor> {
        self.check(request)?;
        let (height, width) = (request.height as usize, request.width as usize);
        let (channels, h, w) = self.pipe.latent_shape(height, width)?;
        let (t5_ids, clip_ids) = self.tokens(&request.prompt)?;
        let t5_ids = Tensor::new(t5_ids, &self.device)?.unsqueeze(0)?;
        let clip_ids = Tensor::new(clip_ids, &self.device)?.unsqueeze(0)?;
        let (models, _) = self.models_for(&request.loras)?;
        let (t5, pooled) = self
            .pipe
            .encode_prompt_with(models.clip.as_ref(), &t5_ids, &clip_ids)?;
        // Drawn unpacked, as diffusers' prepare_latents does, then packed.
        let initial = pack(&noise.draw((1, channels, h, w), &self.device)?)?;
        let image_latents = match &request.init_image {
            Some(image) => {
                let pixels = crate::output::from_image(image, &self.device)?;
                Some(pack(&self.pipe.vae().encode(&pixels)?)?)
            }
            None => None,
        };
        let mask = request
            .mask
            .as_ref()
            .map(|mask| mask_latents(mask, channels, h, w, &self.device))
            .transpose()?;
        let job = Denoise {
            height,
            width,
            steps: request.steps as usize,
            guidance: request.cfg_scale,
            noise: &initial,
            init: image_latents.as_ref().map(|latents| Init {
                latents,
                strength: request.strength,
                mask: mask.as_ref(),
            }),
        };
        let latents = self.pipe.run_with(
            &models.transformer,
            &t5,
            &pooled,
            &job,
            &mut |step, steps, latents| {
                progress(&Progress {
                    image: index,
                    images: request.batch_size,
                    step: step as u32,
                    steps: steps as u32,
                    latents: &unpack(latents, h, w)?,
                })
            },
        )?;
        Ok(self.pipe.decode_signed(&latents, height, width)?.squeeze(0)?)
    }

    fn preview(&self, latents: &Tensor) -> Result<RgbImage> {
        preview(latents)
    }

    fn check_loras(&self, loras: &[ActiveLora]) -> Result<Vec<LoraReport>> {
        crate::lora::check(&self.lora_targets(), loras)
    }

    fn prepare_loras(&self, loras: &[ActiveLora]) -> Result<Vec<LoraReport>> {
        Ok(self.models_for(loras)?.1)
    }
}

/// FLUX.1 latents (the transformer's space, unpacked) to RGB by the linear approximation ComfyUI uses
/// for live previews (`latent_formats.Flux`): one pixel per latent, no VAE.
pub fn preview(latents: &Tensor) -> Result<RgbImage> {
    const FACTORS: [[f32; 3]; 16] = [
        [-0.0346, 0.0244, 0.0681],
        [0.0034, 0.0210, 0.0687],
        [0.0275, -0.0668, -0.0433],
        [-0.0174, 0.0160, 0.0617],
        [0.0859, 0.0721, 0.0329],
        [0.0004, 0.0383, 0.0115],
        [0.0405, 0.0861, 0.0915],
        [-0.0236, -0.0185, -0.0259],
        [-0.0245, 0.0250, 0.1180],
        [0.1008, 0.0755, -0.0421],
        [-0.0515, 0.0201, 0.0011],
        [0.0428, -0.0012, -0.0036],
        [0.0817, 0.0765, 0.0749],
        [-0.1264, -0.0522, -0.1103],
        [-0.0280, -0.0881, -0.0499],
        [-0.1262, -0.0982, -0.0778],
    ];
    const BIAS: [f32; 3] = [-0.0329, -0.0718, -0.0851];
    let latents = latents.to_dtype(DType::F32)?;
    let latents = if latents.rank() == 4 {
        latents.get(0)?
    } else {
        latents
    };
    let (c, h, w) = latents.dims3()?;
    if c != FACTORS.len() {
        return Err(SdError::invalid(
            "latents",
            format!("a Flux preview takes 16 latent channels, got {c}"),
        ));
    }
    let factors = Tensor::new(&FACTORS, latents.device())?; // (16, 3)
    let bias = Tensor::new(&BIAS, latents.device())?.reshape((3, 1))?;
    let rgb = factors
        .t()?
        .matmul(&latents.reshape((c, h * w))?)? // (3, h*w)
        .broadcast_add(&bias)?
        .reshape((3, h, w))?;
    crate::output::to_image(&rgb)
}
