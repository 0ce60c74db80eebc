//! SDXL's denoising loop as `StableDiffusionXLPipeline` runs it: classifier-free guidance over the text
//! states, the pooled text embedding and the size/crop time ids, with any registered scheduler.
//!
//! Text encoding is outside: the loop takes the encoders' outputs, so it can be checked on its own and
//! fed by whichever CLIP loader the worker uses.

use super::Result;
use super::unet::{AddedCond, Unet};
use crate::schedulers::Scheduler;
use candle_core::{DType, Device, Tensor};

/// One prompt's SDXL conditioning: both encoders' penultimate states concatenated, and the pooled output.
pub struct SdxlPrompt {
    /// (1, n, 2048 for SDXL): CLIP-L and bigG penultimate hidden states side by side.
    pub context: Tensor,
    /// (1, 1280 for SDXL): the second encoder's projected pooled output.
    pub pooled: Tensor,
}

/// The six time ids SDXL was trained with: original size, crop top-left, target size (pixels, (h, w)).
pub fn time_ids(
    original: (usize, usize),
    crop_top_left: (usize, usize),
    target: (usize, usize),
    device: &Device,
) -> Result<Tensor> {
    let ids = [
        original.0,
        original.1,
        crop_top_left.0,
        crop_top_left.1,
        target.0,
        target.1,
    ]
    .map(|v| v as f32);
    Ok(Tensor::from_slice(&ids, (1, 6), device)?)
}

/// What a run needs beyond the model and scheduler.
pub struct Denoise<'a> {
    /// The prompt's conditioning.
    pub positive: &'a SdxlPrompt,
    /// The negative prompt's; with guidance above 1 it is required (diffusers uses zeros for an empty one).
    pub negative: Option<&'a SdxlPrompt>,
    /// Time ids for both, from [`time_ids`].
    pub time_ids: &'a Tensor,
    /// Classifier-free guidance scale; 1 or less runs the model once per step without the negative.
    pub guidance: f64,
    /// Unit Gaussian starting latents (b, 4, h/8, w/8), b matching the prompts' batch; the scheduler
    /// scales them.
    pub noise: &'a Tensor,
}

/// Runs every step of `scheduler`, returning the final latents (before the VAE). `step_noise` gives unit
/// Gaussian noise shaped like the latents to ancestral schedulers (called only for them), and `on_step(done,
/// total)` reports progress.
pub fn denoise(
    unet: &Unet,
    scheduler: &mut dyn Scheduler,
    run: &Denoise,
    step_noise: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<Tensor> {
    let cfg = run.guidance > 1.0;
    let (context, pooled, time_ids) = match (cfg, run.negative) {
        (true, Some(neg)) => (
            Tensor::cat(&[&neg.context, &run.positive.context], 0)?,
            Tensor::cat(&[&neg.pooled, &run.positive.pooled], 0)?,
            Tensor::cat(&[run.time_ids, run.time_ids], 0)?,
        ),
        (true, None) => (
            Tensor::cat(&[&run.positive.context.zeros_like()?, &run.positive.context], 0)?,
            Tensor::cat(&[&run.positive.pooled.zeros_like()?, &run.positive.pooled], 0)?,
            Tensor::cat(&[run.time_ids, run.time_ids], 0)?,
        ),
        (false, _) => (
            run.positive.context.clone(),
            run.positive.pooled.clone(),
            run.time_ids.clone(),
        ),
    };
    let dtype = run.noise.dtype();
    let added = AddedCond {
        text_embeds: &pooled.to_dtype(dtype)?,
        time_ids: &time_ids.to_dtype(DType::F32)?,
    };
    let context = context.to_dtype(dtype)?;
    let timesteps = scheduler.timesteps().to_vec();
    let mut latents = (run.noise * scheduler.init_noise_sigma())?;
    for (i, &t) in timesteps.iter().enumerate() {
        let input = if cfg {
            Tensor::cat(&[&latents, &latents], 0)?
        } else {
            latents.clone()
        };
        let input = scheduler.scale_model_input(&input, i)?;
        let out = unet.forward(&input, t, &context, Some(&added))?;
        let prediction = if cfg {
            let batch = latents.dim(0)?;
            let (uncond, text) = (out.narrow(0, 0, batch)?, out.narrow(0, batch, batch)?);
            (&uncond + ((text - &uncond)? * run.guidance)?)?
        } else {
            out
        };
        let noise = if scheduler.needs_noise() {
            Some(step_noise(&latents)?)
        } else {
            None
        };
        latents = scheduler.step(&prediction, i, &latents, noise.as_ref())?;
        on_step(i + 1, timesteps.len());
    }
    Ok(latents)
}
