//! `ImageConfig`: what an image worker needs to know about a checkpoint, and the defaults it implies.

use serde::{Deserialize, Serialize};

use super::{ModelConfig, ModelType, wrong_type};
use crate::compat::{Incompatibility, WorkerCapabilities};

/// The architecture generation a checkpoint belongs to; fine-tune lines (Pony, Illustrious) map to theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "lowercase")]
pub enum ImageBase {
    /// Stable Diffusion 1.x (CLIP ViT-L, 768-wide cross-attention).
    Sd1,
    /// Stable Diffusion 2.x (OpenCLIP ViT-H, 1024-wide cross-attention).
    Sd2,
    /// SDXL and its lines (Pony, Illustrious, NoobAI).
    Sdxl,
    /// Stable Diffusion 3 and 3.5 (MMDiT).
    Sd3,
    /// Flux.1.
    Flux,
    /// Anything else.
    #[serde(other)]
    Other,
}

impl ImageBase {
    /// The JSON name (`sd1`, `sdxl`...).
    pub fn as_str(self) -> &'static str {
        match self {
            ImageBase::Sd1 => "sd1",
            ImageBase::Sd2 => "sd2",
            ImageBase::Sdxl => "sdxl",
            ImageBase::Sd3 => "sd3",
            ImageBase::Flux => "flux",
            ImageBase::Other => "other",
        }
    }

    /// Normalizes a base-model name as CivitAI and model cards write it (`SD 1.5`, `Pony`, `Flux.1 D`).
    pub fn from_source_name(name: &str) -> ImageBase {
        let n = name.trim().to_ascii_lowercase();
        let has = |p: &str| n.starts_with(p);
        if has("sd 1") || has("sd1") || has("stable diffusion 1") {
            ImageBase::Sd1
        } else if has("sd 2") || has("sd2") || has("stable diffusion 2") {
            ImageBase::Sd2
        } else if has("sdxl")
            || has("pony")
            || has("illustrious")
            || has("noobai")
            || has("stable diffusion xl")
        {
            ImageBase::Sdxl
        } else if has("sd 3") || has("sd3") || has("stable diffusion 3") {
            ImageBase::Sd3
        } else if has("flux.1") || has("flux 1") || n == "flux" {
            ImageBase::Flux
        } else {
            ImageBase::Other
        }
    }

    /// The resolution the base was trained at.
    pub fn native_resolution(self) -> Resolution {
        let side = match self {
            ImageBase::Sd1 => 512,
            ImageBase::Sd2 => 768,
            ImageBase::Sdxl | ImageBase::Sd3 | ImageBase::Flux => 1024,
            ImageBase::Other => 512,
        };
        Resolution {
            width: side,
            height: side,
        }
    }
}

impl std::fmt::Display for ImageBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which job a checkpoint of a base was trained for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "lowercase")]
pub enum ImageVariant {
    /// Text (and image) to image.
    #[default]
    Normal,
    /// Inpainting (9 UNet input channels: latents, mask, masked image).
    Inpaint,
    /// Depth-conditioned.
    Depth,
    /// The SDXL refiner.
    Refiner,
}

impl std::fmt::Display for ImageVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ImageVariant::Normal => "normal",
            ImageVariant::Inpaint => "inpaint",
            ImageVariant::Depth => "depth",
            ImageVariant::Refiner => "refiner",
        })
    }
}

/// A few-step distillation of a base: it changes the steps and guidance that work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "lowercase")]
pub enum Distillation {
    /// SDXL Turbo / SD Turbo (adversarial distillation; 1 to 4 steps, no guidance).
    Turbo,
    /// SDXL Lightning.
    Lightning,
    /// Hyper-SD.
    Hyper,
    /// Latent consistency models.
    Lcm,
    /// Flux.1 schnell (timestep-distilled, no guidance embedding).
    Schnell,
}

impl Distillation {
    /// Reads the distillation from a base-model name (`SDXL Turbo`, `SD 1.5 Hyper`, `Flux.1 S`).
    pub fn from_source_name(name: &str) -> Option<Distillation> {
        let n = name.trim().to_ascii_lowercase();
        if n.contains("turbo") {
            Some(Distillation::Turbo)
        } else if n.contains("lightning") {
            Some(Distillation::Lightning)
        } else if n.contains("hyper") {
            Some(Distillation::Hyper)
        } else if n.contains("lcm") {
            Some(Distillation::Lcm)
        } else if n.contains("schnell") || n == "flux.1 s" {
            Some(Distillation::Schnell)
        } else {
            None
        }
    }
}

/// What the UNet or transformer predicts; the scheduler must match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// Noise (SD 1.x, SDXL).
    Epsilon,
    /// Velocity (SD 2.x 768).
    VPrediction,
    /// Rectified flow (SD3, Flux).
    Flow,
}

/// What kind of file it is: a full checkpoint or an add-on to one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "lowercase")]
pub enum CheckpointType {
    /// A whole model (UNet, VAE, text encoders).
    #[default]
    Checkpoint,
    /// Low-rank adapter.
    Lora,
    /// Textual-inversion embedding.
    Embedding,
    /// Hypernetwork.
    Hypernetwork,
    /// A VAE alone.
    Vae,
    /// A ControlNet.
    Controlnet,
    /// Upscalers, workflows, and anything else.
    #[serde(other)]
    Other,
}

impl std::fmt::Display for CheckpointType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CheckpointType::Checkpoint => "checkpoint",
            CheckpointType::Lora => "lora",
            CheckpointType::Embedding => "embedding",
            CheckpointType::Hypernetwork => "hypernetwork",
            CheckpointType::Vae => "vae",
            CheckpointType::Controlnet => "controlnet",
            CheckpointType::Other => "other",
        })
    }
}

/// Pixel size of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
pub struct Resolution {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// An example image from the source, so a UI can show what the model makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "camelCase")]
pub struct PreviewImage {
    /// Image URL.
    pub url: String,
    /// Width in pixels, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub width: Option<u32>,
    /// Height in pixels, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub height: Option<u32>,
    /// Whether the image is not safe for work; UIs hide these unless asked.
    #[serde(default)]
    pub nsfw: bool,
}

/// Metadata of an image-generation model, from CivitAI, diffusers configs or safetensors headers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    /// Base model as the source names it (`SD 1.5`, `Pony`, `Flux.1 D`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub base_model: Option<String>,
    /// Normalized base; what workers dispatch on (required: an image entry without one is malformed).
    pub base: ImageBase,
    /// Job the checkpoint was trained for.
    #[serde(default)]
    pub variant: ImageVariant,
    /// Few-step distillation, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub distillation: Option<Distillation>,
    /// What the denoiser predicts; `None` means the base's usual one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub prediction_type: Option<PredictionType>,
    /// Checkpoint, LoRA, embedding...
    #[serde(default)]
    pub checkpoint_type: CheckpointType,
    /// The VAE the authors recommend (a name or catalog id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub vae: Option<String>,
    /// CLIP skip as the popular UIs count it (1 = last layer, 2 = penultimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub clip_skip: Option<u32>,
    /// Training resolution, when the source says or the weights imply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub resolution: Option<Resolution>,
    /// Words that activate a LoRA or embedding.
    #[serde(default)]
    pub trigger_words: Vec<String>,
    /// Recommended samplers, as the source names them (`DPM++ 2M Karras`).
    #[serde(default)]
    pub samplers: Vec<String>,
    /// Recommended step count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub steps: Option<u32>,
    /// Recommended classifier-free guidance scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub cfg_scale: Option<f64>,
    /// Whether the source marks the model not safe for work.
    #[serde(default)]
    pub nsfw: bool,
    /// License summary or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub license: Option<String>,
    /// Source tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Example images.
    #[serde(default)]
    pub preview_images: Vec<PreviewImage>,
    /// Download count at the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub downloads: Option<u64>,
    /// Like count at the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub likes: Option<u64>,
}

impl ImageConfig {
    /// A config for a base named as the source names it, with base and distillation derived from the name.
    pub fn from_base_model(base_model: &str) -> Self {
        let mut config = ImageConfig::new(ImageBase::from_source_name(base_model));
        config.base_model = Some(base_model.to_string());
        config.distillation = Distillation::from_source_name(base_model);
        config
    }

    /// An empty checkpoint config of a base, for sources to fill in.
    pub fn new(base: ImageBase) -> Self {
        ImageConfig {
            base_model: None,
            base,
            variant: ImageVariant::Normal,
            distillation: None,
            prediction_type: None,
            checkpoint_type: CheckpointType::Checkpoint,
            vae: None,
            clip_skip: None,
            resolution: None,
            trigger_words: Vec::new(),
            samplers: Vec::new(),
            steps: None,
            cfg_scale: None,
            nsfw: false,
            license: None,
            tags: Vec::new(),
            preview_images: Vec::new(),
            downloads: None,
            likes: None,
        }
    }
}

/// The resolved parameters an image worker starts a request from.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageParams {
    /// Output size.
    pub resolution: Resolution,
    /// Denoising steps.
    pub steps: u32,
    /// Guidance scale (0 or 1 disables classifier-free guidance).
    pub cfg_scale: f64,
    /// Recommended sampler as the source names it, if any.
    pub sampler: Option<String>,
    /// CLIP skip (1 = none).
    pub clip_skip: u32,
    /// What the denoiser predicts.
    pub prediction_type: PredictionType,
}

impl ModelConfig for ImageConfig {
    type Params = ImageParams;

    fn model_type(&self) -> ModelType {
        ModelType::Image
    }

    fn incompatibilities(&self, worker: &WorkerCapabilities) -> Vec<Incompatibility> {
        if let Some(wrong) = wrong_type(ModelType::Image, worker) {
            return vec![wrong];
        }
        let mut reasons = Vec::new();
        if !worker.bases.contains(&self.base) {
            reasons.push(Incompatibility::Base {
                worker: worker.kind,
                base: self.base,
                base_model: self.base_model.clone(),
            });
        }
        if !worker.variants.contains(&self.variant) {
            reasons.push(Incompatibility::Variant {
                worker: worker.kind,
                variant: self.variant,
            });
        }
        if !worker.checkpoint_types.contains(&self.checkpoint_type) {
            reasons.push(Incompatibility::CheckpointType {
                worker: worker.kind,
                checkpoint_type: self.checkpoint_type,
            });
        }
        reasons
    }

    fn inference_params(&self) -> ImageParams {
        // (steps, cfg) that work for each base and distillation, as their authors recommend.
        let (steps, cfg) = match (self.base, self.distillation) {
            (_, Some(Distillation::Turbo)) => (1, 0.0),
            (ImageBase::Flux, Some(Distillation::Schnell)) => (4, 0.0),
            (_, Some(Distillation::Lightning)) => (4, 1.0),
            (_, Some(Distillation::Hyper)) => (8, 1.0),
            (_, Some(Distillation::Lcm)) => (6, 1.5),
            (ImageBase::Flux, _) => (28, 3.5),
            (ImageBase::Sd3, _) => (28, 7.0),
            (ImageBase::Sdxl, _) => (30, 7.0),
            _ => (25, 7.5),
        };
        let resolution = self.resolution.unwrap_or_else(|| match self.distillation {
            Some(Distillation::Turbo) => Resolution {
                width: 512,
                height: 512,
            },
            _ => self.base.native_resolution(),
        });
        let prediction_type = self.prediction_type.unwrap_or(match self.base {
            ImageBase::Sd2 => PredictionType::VPrediction,
            ImageBase::Sd3 | ImageBase::Flux => PredictionType::Flow,
            _ => PredictionType::Epsilon,
        });
        ImageParams {
            resolution,
            steps: self.steps.unwrap_or(steps),
            cfg_scale: self.cfg_scale.unwrap_or(cfg),
            sampler: self.samplers.first().cloned(),
            clip_skip: self.clip_skip.unwrap_or(1).max(1),
            prediction_type,
        }
    }

    /// Weights as stored, plus activations that grow with the pixel count (about 1 GiB at 512x512 for
    /// a UNet, twice that for the Flux and SD3 transformers).
    fn memory_estimate(&self, weight_bytes: u64) -> u64 {
        let res = self.inference_params().resolution;
        let pixels = u64::from(res.width) * u64::from(res.height);
        let per_512 = match self.base {
            ImageBase::Flux | ImageBase::Sd3 => 2u64 << 30,
            _ => 1u64 << 30,
        };
        weight_bytes + per_512 * pixels / (512 * 512)
    }
}
