//! Stable Diffusion 1.x and 2.x: CLIP text encoder, UNet (4-channel, or 9-channel for inpainting) and
//! VAE, from a diffusers folder or a single-file checkpoint; txt2img, img2img and inpainting with
//! classifier-free guidance and any registered scheduler.

pub mod clip;
mod denoise;
pub(crate) mod image_inputs;
pub mod open_clip;
pub mod single_file;
pub mod tokenizer;
pub mod unet;
pub mod vae;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::layers::unet_2d::UNet2DConditionModel;
use artifacts_contract::{ImageBase, ImageVariant};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use crate::error::{Result, SdError};
use crate::loading::{component_weights, load_tensors, read_config};
use crate::lora::{ActiveLora, Component, LoraReport, Target};
use crate::noise::Noise;
use crate::pipeline::{BaseSpec, ImagePipeline, LoadOptions, ModelSource, PipelineInfo, ProgressFn};
use crate::request::{Defaults, ValidRequest};
use crate::schedulers::SchedulerConfig;
use clip::{ClipConfig, ClipTextEncoder};
use tokenizer::ClipTokenizer;
use unet::UnetConfig;
use vae::{Vae, VaeConfig};

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

/// The tensor names in a safetensors header, without reading the tensors.
pub(crate) fn tensor_names(path: &Path) -> Option<Vec<String>> {
    use std::io::Read;
    let mut len = [0u8; 8];
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).ok()?);
    reader.read_exact(&mut len).ok()?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return None;
    }
    let mut header = vec![0u8; len as usize];
    reader.read_exact(&mut header).ok()?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header).ok()?;
    Some(
        header
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k != "__metadata__")
            .collect(),
    )
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

/// The configs and tensors of a pipeline, before building the models: where a test swaps a part.
pub struct Parts {
    /// Text encoder config and tensors.
    pub text_encoder: (ClipConfig, HashMap<String, Tensor>),
    /// UNet config and tensors.
    pub unet: (UnetConfig, HashMap<String, Tensor>),
    /// VAE config and tensors.
    pub vae: (VaeConfig, HashMap<String, Tensor>),
    /// The noise schedule the model was trained with.
    pub scheduler: SchedulerConfig,
    /// The tokenizer folder, if the model has one.
    pub tokenizer: Option<PathBuf>,
}

impl Parts {
    /// Reads a diffusers folder.
    pub fn from_diffusers(folder: &Path, device: &Device) -> Result<Self> {
        let component = |name: &str| -> Result<HashMap<String, Tensor>> {
            load_tensors(&component_weights(&folder.join(name))?, device)
        };
        let scheduler_path = folder.join("scheduler/scheduler_config.json");
        let scheduler =
            std::fs::read_to_string(&scheduler_path).map_err(|e| SdError::io(&scheduler_path, e))?;
        Ok(Parts {
            text_encoder: (
                read_config(&folder.join("text_encoder/config.json"))?,
                component("text_encoder")?,
            ),
            unet: (read_config(&folder.join("unet/config.json"))?, component("unet")?),
            vae: (read_config(&folder.join("vae/config.json"))?, component("vae")?),
            scheduler: SchedulerConfig::from_json(&scheduler)?,
            tokenizer: Some(folder.join("tokenizer")).filter(|p| p.is_dir()),
        })
    }

    /// Reads a single-file checkpoint, with configs from a diffusers folder or the base's built-in ones.
    pub fn from_single_file(
        path: &Path,
        config: Option<&Path>,
        base: Option<ImageBase>,
        device: &Device,
    ) -> Result<Self> {
        let tensors = load_tensors(path, device)?;
        let sd2 = match single_file::layout(tensors.keys().map(String::as_str)) {
            single_file::Layout::Sd1 => false,
            single_file::Layout::Sd2 => true,
            single_file::Layout::Other => {
                return Err(SdError::layout(
                    path,
                    "not an SD 1.x or 2.x single-file checkpoint",
                ));
            }
        };
        let (text_config, unet_config, vae_config, scheduler, tokenizer) = match config {
            Some(folder) => {
                let scheduler_path = folder.join("scheduler/scheduler_config.json");
                let scheduler =
                    std::fs::read_to_string(&scheduler_path).map_err(|e| SdError::io(&scheduler_path, e))?;
                (
                    Some(read_config(&folder.join("text_encoder/config.json"))?),
                    read_config(&folder.join("unet/config.json"))?,
                    read_config(&folder.join("vae/config.json"))?,
                    SchedulerConfig::from_json(&scheduler)?,
                    Some(folder.join("tokenizer")).filter(|p| p.is_dir()),
                )
            }
            // SD 2.x's text config is read off its OpenCLIP tensors below.
            None => (
                (!sd2).then(sd15_clip),
                if sd2 {
                    UnetConfig::sd21()
                } else {
                    UnetConfig::sd15()
                },
                VaeConfig::sd(),
                SchedulerConfig {
                    steps_offset: 1,
                    prediction_type: match base {
                        Some(ImageBase::Sd2) => artifacts_contract::PredictionType::VPrediction,
                        _ => artifacts_contract::PredictionType::Epsilon,
                    },
                    ..SchedulerConfig::default()
                },
                None,
            ),
        };
        let mut unet_config: UnetConfig = unet_config;
        let parts = single_file::split(tensors, &unet_config, &vae_config)?;
        let text_config = match text_config {
            Some(config) => config,
            None => {
                let mut config = open_clip::config_of(&parts.text_encoder).ok_or_else(|| {
                    SdError::layout(path, "the OpenCLIP text encoder's tensors are incomplete")
                })?;
                // SD 2.x conditions on OpenCLIP ViT-H's penultimate layer (diffusers' converted encoder
                // has 23 of the 24 layers).
                config.num_hidden_layers = config.num_hidden_layers.saturating_sub(1).max(1);
                config
            }
        };
        // Inpainting checkpoints say so only by their input convolution's 9 channels.
        if let Some(conv_in) = parts.unet.get("conv_in.weight") {
            unet_config.in_channels = conv_in.dim(1)?;
        }
        Ok(Parts {
            text_encoder: (text_config, parts.text_encoder),
            unet: (unet_config, parts.unet),
            vae: (vae_config, parts.vae),
            scheduler,
            tokenizer,
        })
    }
}

/// OpenAI CLIP ViT-L/14's text config (SD 1.x, and SDXL's first encoder).
pub(crate) fn sd15_clip() -> ClipConfig {
    ClipConfig {
        vocab_size: 49408,
        hidden_size: 768,
        intermediate_size: 3072,
        num_hidden_layers: 12,
        num_attention_heads: 12,
        max_position_embeddings: 77,
        hidden_act: "quick_gelu".into(),
        layer_norm_eps: 1e-5,
        pad_token_id: Some(49407),
        eos_token_id: Some(49407),
        projection_dim: None,
    }
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

/// The models of the last LoRA set, by its key (paths and weights).
type Adapted = Mutex<Option<(String, Arc<SdModels>)>>;

/// A loaded SD 1.x/2.x pipeline.
pub struct SdPipeline {
    tokenizer: Option<ClipTokenizer>,
    models: Arc<SdModels>,
    base_weights: BaseWeights,
    adapted: Adapted,
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
        // In the model's dtype, so the kept base tensors are the ones the models use (no second copy).
        let cast = |map: HashMap<String, Tensor>| -> Result<HashMap<String, Tensor>> {
            map.into_iter()
                .map(|(k, v)| Ok((k, v.to_device(device)?.to_dtype(dtype)?)))
                .collect()
        };
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
            adapted: Mutex::new(None),
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
        if loras.is_empty() {
            return Ok((self.models.clone(), Vec::new()));
        }
        let key = crate::lora::set_key(loras);
        let no_aliases = HashMap::new();
        let targets = [
            Target {
                component: Component::Text(0),
                tensors: &self.base_weights.text.1,
                aliases: &no_aliases,
            },
            Target {
                component: Component::Denoiser,
                tensors: &self.base_weights.unet.1,
                aliases: &no_aliases,
            },
        ];
        let cached = self.adapted.lock().ok().and_then(|a| a.clone());
        // The reports are cheap to recompute (names only); the merge is what the cache saves.
        if let Some((cached_key, models)) = cached
            && cached_key == key
        {
            return Ok((models, crate::lora::reports(&targets, loras)));
        }
        let (maps, reports) = crate::lora::patch(&targets, loras)?;
        let models = Arc::new(build_models(
            &self.base_weights,
            &maps[0],
            &maps[1],
            self.dtype,
            &self.device,
        )?);
        if let Ok(mut adapted) = self.adapted.lock() {
            *adapted = Some((key, models.clone()));
        }
        Ok((models, reports))
    }

    /// A prompt's token row.
    fn tokens(&self, prompt: &str) -> Result<Tensor> {
        let tokenizer = self.tokenizer.as_ref().ok_or_else(|| {
            SdError::layout(
                Path::new(&self.info.model_name),
                "the model has no tokenizer/ folder",
            )
        })?;
        Ok(Tensor::new(tokenizer.encode(prompt)?, &self.device)?.unsqueeze(0)?)
    }
}

/// A VAE named apart from the model: a diffusers `vae/` folder or a `.safetensors` file (diffusers or
/// original names; the SD VAE's built-in config).
pub(crate) fn separate_vae(path: &Path, device: &Device) -> Result<(VaeConfig, HashMap<String, Tensor>)> {
    if path.is_dir() {
        return Ok((
            read_config(&path.join("config.json"))?,
            load_tensors(&component_weights(path)?, device)?,
        ));
    }
    let config = VaeConfig::sd();
    let tensors = load_tensors(path, device)?;
    if tensors.keys().any(|k| k.starts_with("encoder.down_blocks.")) {
        return Ok((config, tensors));
    }
    let prefixed = tensors
        .into_iter()
        .map(|(k, v)| (format!("first_stage_model.{k}"), v))
        .collect::<HashMap<_, _>>();
    let dummy = UnetConfig::sd15();
    Ok((config.clone(), single_file::split(prefixed, &dummy, &config)?.vae))
}

impl ImagePipeline for SdPipeline {
    fn info(&self) -> &PipelineInfo {
        &self.info
    }

    fn prepare_loras(&self, loras: &[ActiveLora]) -> Result<Vec<LoraReport>> {
        Ok(self.models_for(loras)?.1)
    }

    fn generate_one(
        &self,
        request: &ValidRequest,
        index: u32,
        noise: &mut Noise,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Tensor> {
        let cond = self.tokens(&request.prompt)?;
        let uncond = self.tokens(&request.negative_prompt)?;
        let image = self.generate_from_tokens(request, &cond, &uncond, index, noise, progress)?;
        Ok(image.squeeze(0)?)
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
        let skip = request.clip_skip as usize;
        let (models, _) = self.models_for(&request.loras)?;
        let encode = |tokens: &Tensor| -> Result<Tensor> {
            let out = models.text_encoder.forward(tokens)?;
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
