//! The JSON body of the image routes: OpenAI's fields (`prompt`, `n`, `size`, `response_format`) plus
//! Stable Diffusion's, with images as base64 (optionally a `data:` URL).

use base64::Engine as _;
use serde::Deserialize;
use worker_runtime::WorkerError;

use crate::request::GenerationRequest;

/// A request body of `/v1/images/generations` and `/v1/images/stream`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRequestBody {
    /// What to draw.
    pub prompt: String,
    /// OpenAI: the model name; ignored (a worker serves one model).
    #[serde(default)]
    pub model: Option<String>,
    /// OpenAI: how many images.
    #[serde(default)]
    pub n: Option<u32>,
    /// OpenAI: `WIDTHxHEIGHT`.
    #[serde(default)]
    pub size: Option<String>,
    /// OpenAI: only `b64_json` is served (a worker keeps no files to link to).
    #[serde(default)]
    pub response_format: Option<String>,
    /// OpenAI: the end user; ignored.
    #[serde(default)]
    pub user: Option<String>,
    /// What to steer away from.
    #[serde(default)]
    pub negative_prompt: Option<String>,
    /// Width, when `size` is not given.
    #[serde(default)]
    pub width: Option<u32>,
    /// Height, when `size` is not given.
    #[serde(default)]
    pub height: Option<u32>,
    /// Denoising steps.
    #[serde(default)]
    pub steps: Option<u32>,
    /// Guidance scale.
    #[serde(default)]
    pub cfg_scale: Option<f64>,
    /// Seed of the first image.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Sampler name.
    #[serde(default)]
    pub scheduler: Option<String>,
    /// CLIP skip.
    #[serde(default)]
    pub clip_skip: Option<u32>,
    /// img2img / inpainting: the image to start from, base64 PNG or JPEG.
    #[serde(default)]
    pub image: Option<String>,
    /// Inpainting: the mask, base64 PNG or JPEG, white where to repaint.
    #[serde(default)]
    pub mask: Option<String>,
    /// img2img: how much to repaint.
    #[serde(default)]
    pub strength: Option<f64>,
    /// The random number generator: `default`, `torch-cpu` (ComfyUI, diffusers on CPU) or `torch-cuda`
    /// (AUTOMATIC1111).
    #[serde(default)]
    pub rng: Option<String>,
    /// LoRAs to apply: `[{"model": ID, "weight": W}]` (ids, LoRA entry names or paths; weight 1 when left
    /// out), beside the prompt's `<lora:NAME:WEIGHT>` tags.
    #[serde(default)]
    pub loras: Vec<LoraBody>,
    /// Streaming: a preview every this many steps.
    #[serde(default)]
    pub preview_every: Option<u32>,
}

/// One entry of `loras`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraBody {
    /// A catalog id, a LoRA entry's name or a path.
    pub model: String,
    /// Its multiplier (1 when left out).
    #[serde(default)]
    pub weight: Option<f64>,
}

/// Which JSON names the request used, so errors name the field the client sent.
pub struct FieldNames {
    size: bool,
}

impl FieldNames {
    /// The body's name of a [`GenerationRequest`] field.
    pub fn json_name(&self, field: &'static str) -> &'static str {
        match field {
            "width" | "height" if self.size => "size",
            "batch_size" => "n",
            "init_image" => "image",
            other => other,
        }
    }
}

fn decode(field: &'static str, text: &str) -> Result<image::DynamicImage, WorkerError> {
    let data = match text.split_once(";base64,") {
        Some((prefix, data)) if prefix.starts_with("data:") => data,
        _ => text,
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| WorkerError::invalid(field, format!("{field}: not valid base64 ({e})")))?;
    crate::upload::decode_image(&bytes, field).map_err(|e| WorkerError::invalid(field, e.to_string()))
}

impl ImageRequestBody {
    /// Which names the body used.
    pub fn field_names(&self) -> FieldNames {
        FieldNames {
            size: self.size.is_some(),
        }
    }

    /// The generation request, with images decoded and `size` parsed; bad values name their field.
    /// Decoding images is CPU work: async callers run this on a blocking thread.
    pub fn into_request(self) -> Result<GenerationRequest, WorkerError> {
        if let Some(format) = &self.response_format
            && format != "b64_json"
        {
            return Err(WorkerError::invalid(
                "response_format",
                format!("response_format: only b64_json is served, got {format:?}"),
            ));
        }
        let (width, height) = match &self.size {
            Some(size) => {
                let parsed = size
                    .split_once('x')
                    .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)));
                let (w, h) = parsed.ok_or_else(|| {
                    WorkerError::invalid(
                        "size",
                        format!("size: expected WIDTHxHEIGHT such as 512x512, got {size:?}"),
                    )
                })?;
                (Some(w), Some(h))
            }
            None => (self.width, self.height),
        };
        let init_image = self.image.as_deref().map(|i| decode("image", i)).transpose()?;
        let mask = self.mask.as_deref().map(|m| decode("mask", m)).transpose()?;
        Ok(GenerationRequest {
            prompt: self.prompt,
            negative_prompt: self.negative_prompt.unwrap_or_default(),
            width,
            height,
            steps: self.steps,
            cfg_scale: self.cfg_scale,
            seed: self.seed,
            scheduler: self.scheduler,
            batch_size: self.n,
            clip_skip: self.clip_skip,
            init_image: init_image.map(|i| i.to_rgb8()),
            strength: self.strength,
            mask: mask.map(|m| m.to_luma8()),
            rng: self.rng,
            loras: self
                .loras
                .into_iter()
                .map(|l| crate::lora::LoraSpec {
                    model: l.model,
                    weight: l.weight.unwrap_or(1.0),
                })
                .collect(),
        })
    }
}
