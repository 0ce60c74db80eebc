//! The denoising loop of SD 1.x/2.x: txt2img, img2img (strength) and inpainting, with the 9-channel
//! UNet's extra inputs or, for a plain UNet, latent blending as diffusers does.

use candle_core::{DType, Tensor};
use image::RgbImage;

use super::SdPipeline;
use super::image_inputs::{ImageInputs, guided_steps};
use crate::error::Result;
use crate::noise::Noise;
use crate::pipeline::ProgressFn;
use crate::request::ValidRequest;

/// The final latents of one image.
pub(super) fn run(
    p: &SdPipeline,
    unet: &crate::layers::unet_2d::UNet2DConditionModel,
    request: &ValidRequest,
    context: &Tensor,
    index: u32,
    noise: &mut Noise,
    progress: &mut ProgressFn<'_>,
) -> Result<Tensor> {
    let scale = p.vae.config().scale();
    let (h, w) = (request.height as usize / scale, request.width as usize / scale);
    let latent_channels = p.vae.config().latent_channels;
    let shape = (1, latent_channels, h, w);
    let steps = request.steps as usize;
    // A scheduler for another kind of model (flow matching) is the request's fault.
    let mut scheduler = crate::schedulers::build(&request.scheduler, &p.scheduler, steps)
        .map_err(|e| crate::error::SdError::invalid("scheduler", e.to_string()))?;
    let initial = noise.draw(shape, &p.device)?.to_dtype(p.dtype)?;
    let encode = |image: &Tensor| -> Result<Tensor> { Ok(p.vae.encode(image)?) };
    let inpaint_model = p.unet_in_channels == 9;
    let inputs = ImageInputs::new(request, (h, w), inpaint_model, (p.dtype, &p.device), &encode)?;
    let start = inputs.start(request);
    scheduler.begin_at(start)?;
    let unet = |model_in: &Tensor, t: f64| -> Result<Tensor> { Ok(unet.forward(model_in, t, context)?) };
    guided_steps(
        request,
        index,
        &inputs,
        scheduler.as_mut(),
        (&initial, start),
        noise,
        progress,
        &unet,
    )
}

/// SD 1.x/2.x latents to RGB by the linear approximation the UIs use for live previews (one pixel per
/// latent, no VAE): cheap enough to send every few steps.
pub(super) fn preview(latents: &Tensor) -> Result<RgbImage> {
    const FACTORS: [[f32; 3]; 4] = [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ];
    let latents = latents.to_dtype(DType::F32)?;
    let latents = if latents.rank() == 4 {
        latents.get(0)?
    } else {
        latents
    };
    let (c, h, w) = latents.dims3()?;
    let c = c.min(4);
    let factors = Tensor::new(&FACTORS, latents.device())?.narrow(0, 0, c)?; // (c, 3)
    let rgb = latents
        .narrow(0, 0, c)?
        .reshape((c, h * w))?
        .t()?
        .contiguous()?
        .matmul(&factors.contiguous()?)? // (h*w, 3)
        .t()?
        .contiguous()?
        .reshape((3, h, w))?;
    crate::output::to_image(&rgb)
}
