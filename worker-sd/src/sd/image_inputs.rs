//! The image side of img2img and inpainting for the UNet bases (SD 1.x/2.x and SDXL), as diffusers'
//! img2img and inpaint pipelines prepare it: the init image's latents, the mask at latent size, the
//! 9-channel UNet's extra input, which step to start from (strength), the starting latents, and the
//! blending of the noised original back outside the mask after each step (4-channel UNet); and the
//! denoising steps themselves, which only differ between the bases in how the UNet is called.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::noise::Noise;
use crate::output::from_image;
use crate::pipeline::{Progress, ProgressFn};
use crate::request::ValidRequest;
use crate::schedulers::Scheduler;

/// A request's init image and mask, ready for the denoising loop.
pub(crate) struct ImageInputs {
    /// The init image's (scaled) latents, for img2img and inpainting.
    latents: Option<Tensor>,
    /// The mask at latent size, 1 where to repaint.
    mask: Option<Tensor>,
    /// The 9-channel UNet's extra input: the mask and the latents of the image outside it.
    pub extra: Option<Tensor>,
}

impl ImageInputs {
    /// Encodes the request's images with `encode` (image in [-1, 1] to scaled latents); `latent_size`
    /// is the latents' (height, width).
    pub fn new(
        request: &ValidRequest,
        latent_size: (usize, usize),
        inpaint_model: bool,
        (dtype, device): (DType, &Device),
        encode: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Self> {
        let (height, width) = (request.height as usize, request.width as usize);
        let (h, w) = latent_size;
        let image = request
            .init_image
            .as_ref()
            .map(|image| -> Result<Tensor> { Ok(from_image(image, device)?.to_dtype(dtype)?) })
            .transpose()?;
        // The mask at full and latent size, 1 where to repaint (nearest neighbour, as diffusers resizes it).
        let mask = match &request.mask {
            Some(mask) => {
                let full = Tensor::from_vec(mask.as_raw().clone(), (1, 1, height, width), device)?
                    .to_dtype(DType::F32)?
                    .ge(127.5)?
                    .to_dtype(dtype)?;
                let small = full.upsample_nearest2d(h, w)?;
                Some((full, small))
            }
            None => None,
        };
        let extra = if inpaint_model {
            let (full, small) = match &mask {
                Some(m) => m.clone(),
                None => (
                    Tensor::ones((1, 1, height, width), dtype, device)?,
                    Tensor::ones((1, 1, h, w), dtype, device)?,
                ),
            };
            let masked = match &image {
                Some(image) => image.broadcast_mul(&(1.0 - &full)?)?,
                None => Tensor::zeros((1, 3, height, width), dtype, device)?,
            };
            Some(Tensor::cat(&[small, encode(&masked)?], 1)?)
        } else {
            None
        };
        Ok(ImageInputs {
            latents: image.as_ref().map(encode).transpose()?,
            mask: mask.map(|(_, small)| small),
            extra,
        })
    }

    /// The first step run: img2img skips the noisiest steps (diffusers' `get_timesteps`, with at least
    /// one step run).
    pub fn start(&self, request: &ValidRequest) -> usize {
        let steps = request.steps as usize;
        match &self.latents {
            Some(_) => steps - ((steps as f64 * request.strength) as usize).clamp(1, steps),
            None => 0,
        }
    }

    /// The latents the loop starts from: the init image noised to the first step run (img2img, and
    /// inpainting below full strength), else the noise at the scheduler's initial scale.
    pub fn initial_latents(&self, scheduler: &dyn Scheduler, noise: &Tensor, start: usize) -> Result<Tensor> {
        match &self.latents {
            Some(latents) if self.mask.is_none() || start > 0 => {
                Ok(scheduler.add_noise(latents, noise, start)?)
            }
            _ => Ok((noise * scheduler.init_noise_sigma())?),
        }
    }

    /// After step `step` of `steps`: with a 4-channel UNet, puts the original (noised to the next step)
    /// back outside the mask, as diffusers' inpaint pipelines do; otherwise the latents as they are.
    pub fn blend(
        &self,
        scheduler: &dyn Scheduler,
        latents: Tensor,
        noise: &Tensor,
        (step, steps): (usize, usize),
    ) -> Result<Tensor> {
        let (Some(mask), Some(original), None) = (&self.mask, &self.latents, &self.extra) else {
            return Ok(latents);
        };
        let proper = if step + 1 < steps {
            scheduler.add_noise(original, noise, step + 1)?
        } else {
            original.clone()
        };
        Ok((proper.broadcast_mul(&(1.0 - mask)?)? + latents.broadcast_mul(mask)?)?)
    }
}

/// Runs the steps from `start` with classifier-free guidance when `cfg_scale` is above 1, returning the
/// final latents. `unet(model_input, timestep)` is the base's UNet call with its conditioning already
/// batched as (negative, positive) when guided; the 9-channel extra input is appended here. `initial` is
/// the image's first noise draw, whose shape, dtype and device the per-step noise of ancestral
/// schedulers takes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn guided_steps(
    request: &ValidRequest,
    index: u32,
    inputs: &ImageInputs,
    scheduler: &mut dyn Scheduler,
    (initial, start): (&Tensor, usize),
    noise: &mut Noise,
    progress: &mut ProgressFn<'_>,
    unet: &dyn Fn(&Tensor, f64) -> Result<Tensor>,
) -> Result<Tensor> {
    let guided = request.cfg_scale > 1.0;
    let pair = |t: &Tensor| -> Result<Tensor> {
        Ok(if guided {
            Tensor::cat(&[t, t], 0)?
        } else {
            t.clone()
        })
    };
    let extra = inputs.extra.as_ref().map(pair).transpose()?;
    let timesteps = scheduler.timesteps().to_vec();
    let steps = request.steps as usize;
    let mut latents = inputs.initial_latents(scheduler, initial, start)?;
    for (done, step) in (start..steps).enumerate() {
        let mut model_in = scheduler.scale_model_input(&pair(&latents)?, step)?;
        if let Some(extra) = &extra {
            model_in = Tensor::cat(&[&model_in, extra], 1)?;
        }
        let out = unet(&model_in, timesteps[step])?;
        let out = if guided {
            let (uncond, cond) = (out.narrow(0, 0, 1)?, out.narrow(0, 1, 1)?);
            (&uncond + ((cond - &uncond)? * request.cfg_scale)?)?
        } else {
            out
        };
        let step_noise = if scheduler.needs_noise() {
            Some(
                noise
                    .draw(initial.dims(), initial.device())?
                    .to_dtype(initial.dtype())?,
            )
        } else {
            None
        };
        latents = scheduler.step(&out, step, &latents, step_noise.as_ref())?;
        latents = inputs.blend(scheduler, latents, initial, (step, steps))?;
        progress(&Progress {
            image: index,
            images: request.batch_size,
            step: done as u32 + 1,
            steps: (steps - start) as u32,
            latents: &latents,
        })?;
    }
    Ok(latents)
}
