//! An SDXL pipeline's configs and tensors before the models are built, from a diffusers folder or a
//! single-file checkpoint (with a diffusers folder's configs, or SDXL's built-in ones).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::unet::UnetConfig;
use crate::error::{Result, SdError};
use crate::loading::{component_weights, load_tensors, read_config};
use crate::schedulers::SchedulerConfig;
use crate::schedulers::TimestepSpacing;
use crate::sd::clip::ClipConfig;
use crate::sd::single_file::{self, UnetLayout};
use crate::sd::vae::VaeConfig;

/// SDXL's VAE latent scale (its `vae/config.json` says so; single files carry no config).
pub const SDXL_VAE_SCALING: f64 = 0.13025;

/// The configs and tensors of an SDXL pipeline: where a test swaps a part.
pub struct Parts {
    /// CLIP ViT-L: config and tensors (transformers names).
    pub text_encoder: (ClipConfig, HashMap<String, Tensor>),
    /// OpenCLIP bigG with its projection: config and tensors (transformers names).
    pub text_encoder_2: (ClipConfig, HashMap<String, Tensor>),
    /// The two tokenizer folders, when the model has them.
    pub tokenizers: (Option<PathBuf>, Option<PathBuf>),
    /// UNet config and tensors (diffusers names).
    pub unet: (UnetConfig, HashMap<String, Tensor>),
    /// VAE config and tensors (diffusers names).
    pub vae: (VaeConfig, HashMap<String, Tensor>),
    /// Whether the VAE must run in float32 (SDXL's overflows in float16; `force_upcast` in its config).
    pub vae_force_upcast: bool,
    /// The noise schedule the model was trained with.
    pub scheduler: SchedulerConfig,
    /// `model_index.json`'s `force_zeros_for_empty_prompt` (true by default, as diffusers).
    pub force_zeros_for_empty_prompt: bool,
}

/// What a diffusers folder says beyond the weights.
struct Configs {
    text_encoder: ClipConfig,
    text_encoder_2: ClipConfig,
    unet: UnetConfig,
    vae: VaeConfig,
    vae_force_upcast: bool,
    scheduler: SchedulerConfig,
    tokenizers: (Option<PathBuf>, Option<PathBuf>),
    force_zeros_for_empty_prompt: bool,
}

impl Configs {
    fn read(folder: &Path) -> Result<Self> {
        let scheduler_path = folder.join("scheduler/scheduler_config.json");
        let scheduler =
            std::fs::read_to_string(&scheduler_path).map_err(|e| SdError::io(&scheduler_path, e))?;
        let flag = |path: &Path, key: &str| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|json| json[key].as_bool())
        };
        let tokenizer = |name: &str| Some(folder.join(name)).filter(|p| p.is_dir());
        Ok(Configs {
            text_encoder: read_config(&folder.join("text_encoder/config.json"))?,
            text_encoder_2: read_config(&folder.join("text_encoder_2/config.json"))?,
            unet: read_config(&folder.join("unet/config.json"))?,
            vae: read_config(&folder.join("vae/config.json"))?,
            vae_force_upcast: force_upcast(&folder.join("vae")),
            scheduler: SchedulerConfig::from_json(&scheduler)?,
            tokenizers: (tokenizer("tokenizer"), tokenizer("tokenizer_2")),
            force_zeros_for_empty_prompt: flag(
                &folder.join("model_index.json"),
                "force_zeros_for_empty_prompt",
            )
            .unwrap_or(true),
        })
    }
}

/// Whether the VAE of a diffusers `vae/` folder must run in float32 (`force_upcast` in its config, true
/// when unsaid: SDXL's original VAE overflows in float16; the fp16-fixed one says false).
pub fn force_upcast(vae_folder: &Path) -> bool {
    std::fs::read_to_string(vae_folder.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|json| json["force_upcast"].as_bool())
        .unwrap_or(true)
}

impl Parts {
    /// Reads a diffusers folder (`text_encoder/`, `text_encoder_2/`, `tokenizer/`, `tokenizer_2/`,
    /// `unet/`, `vae/`, `scheduler/`).
    pub fn from_diffusers(folder: &Path, device: &Device) -> Result<Self> {
        let configs = Configs::read(folder)?;
        let component = |name: &str| -> Result<HashMap<String, Tensor>> {
            load_tensors(&component_weights(&folder.join(name))?, device)
        };
        Ok(Parts {
            text_encoder: (configs.text_encoder, component("text_encoder")?),
            text_encoder_2: (configs.text_encoder_2, component("text_encoder_2")?),
            tokenizers: configs.tokenizers,
            unet: (configs.unet, component("unet")?),
            vae: (configs.vae, component("vae")?),
            vae_force_upcast: configs.vae_force_upcast,
            scheduler: configs.scheduler,
            force_zeros_for_empty_prompt: configs.force_zeros_for_empty_prompt,
        })
    }

    /// Reads a single-file checkpoint, with the configs and tokenizers of a diffusers folder (like
    /// diffusers' `from_single_file(config=...)`) or SDXL's built-in configs (then without tokenizers).
    /// `few_step` picks trailing timesteps for the built-in schedule, as few-step distillations
    /// (Turbo, Lightning) are run.
    pub fn from_single_file(
        path: &Path,
        config: Option<&Path>,
        few_step: bool,
        device: &Device,
    ) -> Result<Self> {
        let tensors = load_tensors(path, device)?;
        if !single_file::is_sdxl(tensors.keys().map(String::as_str)) {
            return Err(SdError::layout(
                path,
                "not an SDXL single-file checkpoint (no model.diffusion_model.* and conditioner.embedders.1.*)",
            ));
        }
        let configs = match config {
            Some(folder) => Some(Configs::read(folder)?),
            None => None,
        };
        let mut unet_config = configs.as_ref().map_or_else(UnetConfig::sdxl, |c| c.unet.clone());
        let vae_config = configs.as_ref().map_or_else(
            || VaeConfig {
                scaling_factor: SDXL_VAE_SCALING,
                ..VaeConfig::sd()
            },
            |c| c.vae.clone(),
        );
        let layout = UnetLayout {
            layers_per_block: unet_config.layers_per_block,
            attention: unet_config
                .down_block_types
                .iter()
                .map(|t| t.starts_with("CrossAttn"))
                .collect(),
        };
        let parts = single_file::split_layout(tensors, &layout, &vae_config)?;
        // Inpainting checkpoints say so only by their input convolution's 9 channels.
        if let Some(conv_in) = parts.unet.get("conv_in.weight") {
            unet_config.in_channels = conv_in.dim(1)?;
        }
        let incomplete = |what: &str| SdError::layout(path, format!("the checkpoint has no {what}"));
        if parts.text_encoder.is_empty() {
            return Err(incomplete(
                "first text encoder (conditioner.embedders.0.transformer.*)",
            ));
        }
        Ok(match configs {
            Some(c) => Parts {
                text_encoder: (c.text_encoder, parts.text_encoder),
                text_encoder_2: (c.text_encoder_2, parts.text_encoder_2),
                tokenizers: c.tokenizers,
                unet: (unet_config, parts.unet),
                vae: (vae_config, parts.vae),
                vae_force_upcast: c.vae_force_upcast,
                scheduler: c.scheduler,
                force_zeros_for_empty_prompt: c.force_zeros_for_empty_prompt,
            },
            None => {
                let text_config_2 =
                    crate::sd::open_clip::config_of(&parts.text_encoder_2).ok_or_else(|| {
                        incomplete("complete OpenCLIP text encoder (conditioner.embedders.1.model.*)")
                    })?;
                Parts {
                    text_encoder: (crate::sd::sd15_clip(), parts.text_encoder),
                    text_encoder_2: (text_config_2, parts.text_encoder_2),
                    tokenizers: (None, None),
                    unet: (unet_config, parts.unet),
                    vae: (vae_config, parts.vae),
                    vae_force_upcast: true,
                    scheduler: SchedulerConfig {
                        steps_offset: 1,
                        timestep_spacing: Some(if few_step {
                            TimestepSpacing::Trailing
                        } else {
                            TimestepSpacing::Leading
                        }),
                        ..SchedulerConfig::default()
                    },
                    force_zeros_for_empty_prompt: true,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_vae_config_saying_false_runs_in_half_precision() {
        let dir = tempfile::tempdir().unwrap();
        // No config, or one that does not say: SDXL's original VAE, which overflows in float16.
        assert!(force_upcast(dir.path()));
        std::fs::write(dir.path().join("config.json"), r#"{"scaling_factor": 0.13025}"#).unwrap();
        assert!(force_upcast(dir.path()));
        // madebyollin/sdxl-vae-fp16-fix's config.
        std::fs::write(dir.path().join("config.json"), r#"{"force_upcast": false}"#).unwrap();
        assert!(!force_upcast(dir.path()));
    }
}
