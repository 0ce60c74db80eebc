//! The configs and tensors of an SD 1.x/2.x pipeline, read from a diffusers folder or a single-file
//! checkpoint (with a diffusers folder's configs or the base's built-in ones), and a separate VAE.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use artifacts_contract::ImageBase;
use candle_core::{Device, Tensor};

use super::clip::ClipConfig;
use super::unet::UnetConfig;
use super::vae::VaeConfig;
use super::{open_clip, single_file};
use crate::error::{Result, SdError};
use crate::loading::{component_weights, load_tensors, read_config};
use crate::schedulers::SchedulerConfig;

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
