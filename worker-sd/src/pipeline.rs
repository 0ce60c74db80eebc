//! The seam between generation and model families: every base (SD 1.x/2.x here; SDXL and Flux beside it)
//! implements [`ImagePipeline`], and [`BASES`] lists how to recognize and load each one.
//!
//! What is shared lives here once: request validation, one seed per image, progress and cancellation,
//! and turning the base's `[-1, 1]` image tensors into pictures with their generation parameters.

use std::path::PathBuf;

use artifacts_contract::{ImageBase, ImageVariant, PredictionType};
use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use crate::error::{Result, SdError};
use crate::lora::{ActiveLora, LoraReport};
use crate::noise::Noise;
use crate::request::{Defaults, GenerationRequest, ValidRequest};

/// Where a model's files are: a diffusers folder, or one single-file checkpoint.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A diffusers folder (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`...).
    Diffusers(PathBuf),
    /// A single-file checkpoint (original LDM key names, as CivitAI ships them).
    SingleFile {
        /// The `.safetensors` file.
        path: PathBuf,
        /// A diffusers folder whose configs and tokenizer describe the checkpoint (like diffusers'
        /// `from_single_file(config=...)`); the base's built-in configs when `None`.
        config: Option<PathBuf>,
    },
}

impl ModelSource {
    /// The folder or file, for messages.
    pub fn path(&self) -> &std::path::Path {
        match self {
            ModelSource::Diffusers(path) | ModelSource::SingleFile { path, .. } => path,
        }
    }
}

/// How to load a model, beyond its files.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where to run.
    pub device: Device,
    /// Weight and activation dtype (F32 on CPU, F16 on GPU).
    pub dtype: DType,
    /// The base, when the catalog says; detected from the files when `None`.
    pub base: Option<ImageBase>,
    /// What the denoiser predicts, when the catalog says; else the scheduler config's.
    pub prediction_type: Option<PredictionType>,
    /// A separate VAE (a diffusers `vae/` folder or a `.safetensors` file) replacing the model's.
    pub vae: Option<PathBuf>,
    /// The name of the model, for the PNG parameters.
    pub model_name: String,
    /// Defaults from the catalog entry (steps, CFG, sampler, clip skip), overriding the base's.
    pub defaults: Option<Defaults>,
    /// Where requests' LoRAs are looked up beside paths.
    pub loras: crate::lora::Library,
    /// The SHA-256 of the checkpoint file (AUTOMATIC1111's `Model hash` is its first 10 digits).
    pub model_hash: Option<String>,
}

impl LoadOptions {
    /// CPU, F32, everything detected from the files.
    pub fn cpu(model_name: impl Into<String>) -> Self {
        LoadOptions {
            device: Device::Cpu,
            dtype: DType::F32,
            base: None,
            prediction_type: None,
            vae: None,
            model_name: model_name.into(),
            defaults: None,
            loras: crate::lora::Library::default(),
            model_hash: None,
        }
    }
}

/// What a loaded pipeline is and what it accepts.
#[derive(Debug, Clone)]
pub struct PipelineInfo {
    /// The model family.
    pub base: ImageBase,
    /// The model's name, written into the PNG parameters.
    pub model_name: String,
    /// What a request leaves out.
    pub defaults: Defaults,
    /// The largest CLIP skip (the text encoder's layer count).
    pub max_clip_skip: u32,
    /// Whether the denoiser takes a mask and masked image (9-channel inpainting UNet).
    pub inpaint_model: bool,
    /// Where requests' LoRAs are looked up.
    pub loras: crate::lora::Library,
    /// The SHA-256 of the checkpoint file, when known.
    pub model_hash: Option<String>,
}

/// One denoising step done, for progress bars, streaming and previews.
pub struct Progress<'a> {
    /// Which image of the batch (0-based).
    pub image: u32,
    /// Images in the batch.
    pub images: u32,
    /// Steps done for this image (1-based).
    pub step: u32,
    /// Steps this image takes (fewer than requested for img2img).
    pub steps: u32,
    /// The current latents, for a preview.
    pub latents: &'a Tensor,
}

/// Called after every step; an error (usually [`SdError::Cancelled`]) stops the generation.
pub type ProgressFn<'a> = dyn FnMut(&Progress<'_>) -> Result<()> + 'a;

/// A model family's generation: prompts and noise in, one image tensor out.
pub trait ImagePipeline: Send + Sync {
    /// The pipeline's base, name, defaults and limits.
    fn info(&self) -> &PipelineInfo;

    /// Generates image `index` of a validated request from `noise`, calling `progress` after each step.
    /// Returns the image as `(3, height, width)` in [-1, 1].
    fn generate_one(
        &self,
        request: &ValidRequest,
        index: u32,
        noise: &mut Noise,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Tensor>;

    /// A small, cheap picture of latents mid-generation (one pixel per latent).
    fn preview(&self, latents: &Tensor) -> Result<RgbImage>;

    /// Whether prompts may name textual-inversion embeddings (CLIP text encoders).
    fn takes_embeddings(&self) -> bool {
        false
    }

    /// What [`ImagePipeline::prepare_loras`] would report or refuse, from names and shapes alone (no
    /// merge): how a server refuses a bad LoRA before the request queues.
    fn check_loras(&self, loras: &[ActiveLora]) -> Result<Vec<LoraReport>> {
        self.prepare_loras(loras)
    }

    /// Merges `loras` (kept for the requests that use the same set) and says what each applied; bases
    /// that take no LoRAs refuse them.
    fn prepare_loras(&self, loras: &[ActiveLora]) -> Result<Vec<LoraReport>> {
        if loras.is_empty() {
            return Ok(Vec::new());
        }
        Err(SdError::invalid(
            "loras",
            format!("{} models do not take LoRAs yet", self.info().base),
        ))
    }
}

/// A registered base: how to recognize its files and load them.
pub struct BaseSpec {
    /// The name in messages.
    pub name: &'static str,
    /// The catalog bases it loads.
    pub bases: &'static [ImageBase],
    /// The checkpoint variants it runs (`Inpaint`: a 9-channel UNet, or latent blending).
    pub variants: &'static [ImageVariant],
    /// Which base the files are, if this spec recognizes them (diffusers configs, tensor names).
    pub detect: fn(&ModelSource) -> Option<ImageBase>,
    /// Loads the pipeline.
    pub load: fn(&ModelSource, &LoadOptions) -> Result<Box<dyn ImagePipeline>>,
}

/// Every base this worker loads; SDXL and Flux add a line each.
pub static BASES: &[&BaseSpec] = &[&crate::sd::BASE, &crate::sdxl::BASE, &crate::flux::BASE];

/// Loads a model: the spec for the catalog's base, or the first that recognizes the files.
pub fn load(source: &ModelSource, options: &LoadOptions) -> Result<Box<dyn ImagePipeline>> {
    let path = source.path();
    crate::loading::refuse_pickle(path)?;
    if !path.exists() {
        return Err(SdError::layout(path, "no such file or folder"));
    }
    let (spec, base) = match options.base {
        Some(base) => {
            let spec = BASES
                .iter()
                .find(|spec| spec.bases.contains(&base))
                .ok_or_else(|| SdError::layout(path, format!("this worker cannot load {base} models yet")))?;
            (spec, base)
        }
        None => BASES
            .iter()
            .find_map(|spec| (spec.detect)(source).map(|base| (spec, base)))
            .ok_or_else(|| SdError::layout(path, "not a model layout this worker recognizes"))?,
    };
    let options = LoadOptions {
        base: Some(base),
        ..options.clone()
    };
    (spec.load)(source, &options)
}

/// The embeddings the request's prompts name; `embedding:NAME` on a base without them is refused.
fn embeddings_of(
    pipeline: &dyn ImagePipeline,
    request: &ValidRequest,
) -> Result<Vec<crate::embeddings::ActiveEmbedding>> {
    let info = pipeline.info();
    let prompts = [request.prompt.as_str(), request.negative_prompt.as_str()];
    if pipeline.takes_embeddings() {
        return info.loras.embeddings_in(&prompts, info.base);
    }
    match prompts
        .iter()
        .flat_map(|p| crate::embeddings::candidates(p))
        .find(|w| crate::embeddings::explicit(w).is_some())
    {
        Some(word) => Err(SdError::invalid(
            "embeddings",
            format!(
                "{word}: {} models do not take textual-inversion embeddings",
                info.base
            ),
        )),
        None => Ok(Vec::new()),
    }
}

/// A finished image with what made it.
pub struct GeneratedImage {
    /// The picture.
    pub image: RgbImage,
    /// The seed that reproduces it alone (batch size 1).
    pub seed: u64,
    /// The parameters as the popular UIs write them in the PNG `parameters` chunk.
    pub parameters: String,
    /// What each of the request's LoRAs applied.
    pub loras: Vec<LoraReport>,
}

/// Called after every step with, every `preview_every` steps, a small preview; an error (usually
/// [`SdError::Cancelled`]) stops the generation.
pub type StepFn<'a> = dyn FnMut(&Progress<'_>, Option<RgbImage>) -> Result<()> + 'a;

/// Checks `request` against `pipeline` without generating: fields validated, its LoRAs (the `loras`
/// field and the prompt's `<lora:...>` tags) resolved and checked by name and shape, the embeddings its
/// prompts name found. Every error here is the caller's.
pub fn prepare(pipeline: &dyn ImagePipeline, request: GenerationRequest) -> Result<ValidRequest> {
    let info = pipeline.info();
    let mut request = request;
    let (prompt, tagged) = crate::lora::extract_tags(&request.prompt)?;
    request.prompt = prompt;
    let specs: Vec<_> = request.loras.drain(..).chain(tagged).collect();
    let mut request = request.validate(&info.defaults, info.max_clip_skip)?;
    for spec in specs {
        if !spec.weight.is_finite() || spec.weight.abs() > 10.0 {
            return Err(SdError::invalid(
                "loras",
                format!(
                    "weight of {} must be within [-10, 10], got {}",
                    spec.model, spec.weight
                ),
            ));
        }
        let file = info.loras.resolve(&spec.model, info.base)?;
        request.loras.push(ActiveLora {
            file,
            weight: spec.weight,
        });
    }
    pipeline.check_loras(&request.loras)?;
    request.embeddings = embeddings_of(pipeline, &request)?;
    Ok(request)
}

/// Validates `request` and makes its images, one seed each (`seed + i`); `preview_every` (steps) asks
/// for previews.
pub fn generate(
    pipeline: &dyn ImagePipeline,
    request: GenerationRequest,
    preview_every: Option<u32>,
    on_step: &mut StepFn<'_>,
) -> Result<Vec<GeneratedImage>> {
    let info = pipeline.info().clone();
    let request = prepare(pipeline, request)?;
    let reports = pipeline.prepare_loras(&request.loras)?;
    for warning in reports.iter().filter_map(LoraReport::warning) {
        tracing::warn!("{warning}");
    }
    (0..request.batch_size)
        .map(|index| {
            let seed = request.seed.wrapping_add(index as u64);
            let mut noise = Noise::new(request.rng, seed);
            let mut progress = |p: &Progress<'_>| {
                let preview = match preview_every {
                    Some(every) if every > 0 && p.step.is_multiple_of(every) && p.step < p.steps => {
                        Some(pipeline.preview(p.latents)?)
                    }
                    _ => None,
                };
                on_step(p, preview)
            };
            let tensor = pipeline.generate_one(&request, index, &mut noise, &mut progress)?;
            Ok(GeneratedImage {
                image: crate::output::to_image(&tensor)?,
                seed,
                parameters: crate::output::parameters(&request, seed, &info),
                loras: reports.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod registry_tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_registry_loads_exactly_the_declared_bases_and_variants() {
        // `catalog compat` answers from `WorkerCapabilities::worker_sd()`: it must promise what BASES runs.
        let caps = crate::capabilities();
        let names = |v: &[ImageBase]| v.iter().map(|b| b.as_str()).collect::<BTreeSet<_>>();
        let registered: Vec<ImageBase> = BASES.iter().flat_map(|s| s.bases.iter().copied()).collect();
        assert_eq!(names(&registered), names(&caps.bases));
        let declared: BTreeSet<String> = caps.variants.iter().map(ToString::to_string).collect();
        for spec in BASES {
            let variants: BTreeSet<String> = spec.variants.iter().map(ToString::to_string).collect();
            assert_eq!(variants, declared, "{}", spec.name);
        }
    }
}
