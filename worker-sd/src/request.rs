//! What a caller asks for (prompt, size, steps, sampler, images) and its validation, so the CLI, the
//! HTTP API and every model base refuse the same bad input with the same field names.

use image::{GrayImage, RgbImage};

use crate::error::{Result, SdError};
use crate::rng::RngKind;

/// The largest width or height accepted (pixels).
pub const MAX_SIDE: u32 = 2048;
/// The smallest width or height accepted (pixels).
pub const MIN_SIDE: u32 = 64;
/// The most denoising steps a request may ask for.
pub const MAX_STEPS: u32 = 150;
/// The most images one request may ask for.
pub const MAX_BATCH: u32 = 8;

/// One generation request; `None` fields take the model's defaults ([`Defaults`]).
#[derive(Debug, Clone, Default)]
pub struct GenerationRequest {
    /// What to draw.
    pub prompt: String,
    /// What to steer away from (classifier-free guidance's unconditional prompt).
    pub negative_prompt: String,
    /// Output width in pixels (a multiple of 8); an init image's width by default.
    pub width: Option<u32>,
    /// Output height in pixels (a multiple of 8); an init image's height by default.
    pub height: Option<u32>,
    /// Denoising steps.
    pub steps: Option<u32>,
    /// Classifier-free guidance scale; 1 or less turns guidance off.
    pub cfg_scale: Option<f64>,
    /// Seed of the first image; image `i` of a batch uses `seed + i`. Random when `None`.
    pub seed: Option<u64>,
    /// Sampler name as the UIs write it (`Euler a`, `DPM++ 2M Karras`).
    pub scheduler: Option<String>,
    /// Images to make.
    pub batch_size: Option<u32>,
    /// CLIP skip as the UIs count it (1 = last layer).
    pub clip_skip: Option<u32>,
    /// img2img and inpainting: the image to start from.
    pub init_image: Option<RgbImage>,
    /// img2img: how much of the init image is repainted, in (0, 1]; inpainting: 1 by default.
    pub strength: Option<f64>,
    /// Inpainting: white where to repaint, black where to keep (the init image's size).
    pub mask: Option<GrayImage>,
    /// The random number generator by name (`default`, `torch-cpu`, `torch-cuda`); `default` when `None`.
    pub rng: Option<String>,
    /// LoRAs to apply, beside the `<lora:NAME:WEIGHT>` tags of the prompt.
    pub loras: Vec<crate::lora::LoraSpec>,
}

/// A model's defaults for the fields a request leaves out.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Width and height.
    pub size: (u32, u32),
    /// Denoising steps.
    pub steps: u32,
    /// Guidance scale.
    pub cfg_scale: f64,
    /// Sampler name.
    pub scheduler: String,
    /// CLIP skip.
    pub clip_skip: u32,
}

/// A request with every default applied and every field checked.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    /// What to draw.
    pub prompt: String,
    /// The unconditional prompt.
    pub negative_prompt: String,
    /// Output width.
    pub width: u32,
    /// Output height.
    pub height: u32,
    /// Denoising steps.
    pub steps: u32,
    /// Guidance scale.
    pub cfg_scale: f64,
    /// Seed of the first image.
    pub seed: u64,
    /// The sampler's canonical name.
    pub scheduler: String,
    /// Images to make.
    pub batch_size: u32,
    /// CLIP skip.
    pub clip_skip: u32,
    /// The image to start from, at the output size.
    pub init_image: Option<RgbImage>,
    /// How much of the init image to repaint.
    pub strength: f64,
    /// Where to repaint, at the output size.
    pub mask: Option<GrayImage>,
    /// Which generator draws the noise.
    pub rng: RngKind,
    /// The LoRAs to merge, resolved (empty after [`GenerationRequest::validate`]; `pipeline::generate`
    /// fills it).
    pub loras: Vec<crate::lora::ActiveLora>,
    /// The textual-inversion embeddings the prompts name (filled by `pipeline::generate` as `loras`).
    pub embeddings: Vec<crate::embeddings::ActiveEmbedding>,
}

impl GenerationRequest {
    /// Applies `defaults` and checks every field, naming the first bad one.
    pub fn validate(self, defaults: &Defaults, max_clip_skip: u32) -> Result<ValidRequest> {
        let image_size = self.init_image.as_ref().map(|i| i.dimensions());
        let width = self.width.or(image_size.map(|s| s.0)).unwrap_or(defaults.size.0);
        let height = self.height.or(image_size.map(|s| s.1)).unwrap_or(defaults.size.1);
        side("width", width)?;
        side("height", height)?;
        let steps = self.steps.unwrap_or(defaults.steps);
        if !(1..=MAX_STEPS).contains(&steps) {
            return Err(SdError::invalid(
                "steps",
                format!("must be between 1 and {MAX_STEPS}, got {steps}"),
            ));
        }
        let cfg_scale = self.cfg_scale.unwrap_or(defaults.cfg_scale);
        if !(0.0..=50.0).contains(&cfg_scale) {
            return Err(SdError::invalid(
                "cfg_scale",
                format!("must be between 0 and 50, got {cfg_scale}"),
            ));
        }
        let batch_size = self.batch_size.unwrap_or(1);
        if !(1..=MAX_BATCH).contains(&batch_size) {
            return Err(SdError::invalid(
                "batch_size",
                format!("must be between 1 and {MAX_BATCH}, got {batch_size}"),
            ));
        }
        let clip_skip = self.clip_skip.unwrap_or(defaults.clip_skip);
        if !(1..=max_clip_skip).contains(&clip_skip) {
            return Err(SdError::invalid(
                "clip_skip",
                format!("must be between 1 and {max_clip_skip}, got {clip_skip}"),
            ));
        }
        let name = self.scheduler.unwrap_or_else(|| defaults.scheduler.clone());
        let scheduler = crate::schedulers::find(&name)
            .map_err(|e| SdError::invalid("scheduler", e.to_string()))?
            .name
            .to_string();
        let strength = self
            .strength
            .unwrap_or(if self.init_image.is_some() && self.mask.is_none() {
                0.75
            } else {
                1.0
            });
        if !(strength > 0.0 && strength <= 1.0) {
            return Err(SdError::invalid(
                "strength",
                format!("must be in (0, 1], got {strength}"),
            ));
        }
        if let Some((w, h)) = image_size
            && (w, h) != (width, height)
        {
            return Err(SdError::invalid(
                "init_image",
                format!(
                    "is {w}x{h} but the output is {width}x{height}; resize it or leave width and height out"
                ),
            ));
        }
        if let Some(mask) = &self.mask {
            if self.init_image.is_none() {
                return Err(SdError::invalid("mask", "needs an init_image to inpaint"));
            }
            if mask.dimensions() != (width, height) {
                let (w, h) = mask.dimensions();
                return Err(SdError::invalid(
                    "mask",
                    format!("is {w}x{h} but the init image is {width}x{height}"),
                ));
            }
        }
        let rng = match self.rng.as_deref() {
            None => RngKind::Default,
            Some(name) => RngKind::parse(name).ok_or_else(|| {
                let known: Vec<_> = RngKind::ALL.iter().map(|k| k.name()).collect();
                SdError::invalid(
                    "rng",
                    format!("unknown generator {name:?}; known: {}", known.join(", ")),
                )
            })?,
        };
        Ok(ValidRequest {
            rng,
            loras: Vec::new(),
            embeddings: Vec::new(),
            prompt: self.prompt,
            negative_prompt: self.negative_prompt,
            width,
            height,
            steps,
            cfg_scale,
            seed: self.seed.unwrap_or_else(rand::random),
            scheduler,
            batch_size,
            clip_skip,
            init_image: self.init_image,
            strength,
            mask: self.mask,
        })
    }
}

/// Checks one side: a multiple of 8 within [`MIN_SIDE`, `MAX_SIDE`].
fn side(field: &'static str, value: u32) -> Result<()> {
    if !value.is_multiple_of(8) {
        return Err(SdError::invalid(
            field,
            format!("must be a multiple of 8, got {value}"),
        ));
    }
    if !(MIN_SIDE..=MAX_SIDE).contains(&value) {
        return Err(SdError::invalid(
            field,
            format!("must be between {MIN_SIDE} and {MAX_SIDE}, got {value}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
