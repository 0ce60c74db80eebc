//! SDXL's denoising loop as diffusers' `StableDiffusionXLPipeline`, `...Img2ImgPipeline` and
//! `...InpaintPipeline` run it: classifier-free guidance over the text states, the pooled text embedding
//! and the size/crop time ids; img2img from a noised encoding of the init image (strength); inpainting
//! by blending the noised original back outside the mask after each step (4-channel UNet) or by the
//! 9-channel UNet's mask and masked-image inputs.

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use super::SdxlPipeline;
use super::unet::AddedCond;
use crate::error::{Result, SdError};
use crate::noise::Noise;
use crate::pipeline::ProgressFn;
use crate::request::ValidRequest;
use crate::sd::image_inputs::{ImageInputs, guided_steps};

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

/// The final latents of one image (before the VAE). `negative` is used only with guidance above 1.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    p: &SdxlPipeline,
    unet: &super::unet::Unet,
    request: &ValidRequest,
    positive: &SdxlPrompt,
    negative: &SdxlPrompt,
    index: u32,
    noise: &mut Noise,
    progress: &mut ProgressFn<'_>,
) -> Result<Tensor> {
    let (device, dtype) = (&p.device, p.dtype);
    let scale = p.vae.config().scale();
    let (height, width) = (request.height as usize, request.width as usize);
    let (h, w) = (height / scale, width / scale);
    let shape = (1, p.vae.config().latent_channels, h, w);
    let steps = request.steps as usize;
    // A scheduler for another kind of model (flow matching) is the request's fault.
    let mut scheduler = crate::schedulers::build(&request.scheduler, &p.scheduler, steps)
        .map_err(|e| SdError::invalid("scheduler", e.to_string()))?;
    let initial = noise.draw(shape, device)?.to_dtype(dtype)?;
    let encode = |image: &Tensor| p.encode(image);
    let inputs = ImageInputs::new(request, (h, w), p.unet_in_channels == 9, (dtype, device), &encode)?;
    let start = inputs.start(request);
    scheduler.begin_at(start)?;

    let guided = request.cfg_scale > 1.0;
    let ids = time_ids((height, width), (0, 0), (height, width), device)?;
    let pair = |negative: &Tensor, positive: &Tensor| -> Result<Tensor> {
        Ok(if guided {
            Tensor::cat(&[negative, positive], 0)?
        } else {
            positive.clone()
        })
    };
    let context = pair(&negative.context, &positive.context)?.to_dtype(dtype)?;
    let pooled = pair(&negative.pooled, &positive.pooled)?.to_dtype(dtype)?;
    let ids = pair(&ids, &ids)?;
    let added = AddedCond {
        text_embeds: &pooled,
        time_ids: &ids,
    };
    let unet = |model_in: &Tensor, t: f64| -> Result<Tensor> {
        Ok(unet.forward(model_in, t, &context, Some(&added))?)
    };
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

/// SDXL latents to RGB by the linear approximation the UIs use for live previews (ComfyUI's SDXL
/// factors; one pixel per latent, no VAE): cheap enough to send every few steps.
pub(super) fn preview(latents: &Tensor) -> Result<RgbImage> {
    const FACTORS: [[f32; 3]; 4] = [
        [0.3651, 0.4232, 0.4341],
        [-0.2533, -0.0042, 0.1068],
        [0.1076, 0.1111, -0.0362],
        [-0.3165, -0.2492, -0.2188],
    ];
    const BIAS: [f32; 3] = [0.1084, -0.0175, -0.0011];
    let latents = latents.to_dtype(DType::F32)?;
    let latents = if latents.rank() == 4 {
        latents.get(0)?
    } else {
        latents
    };
    let (c, h, w) = latents.dims3()?;
    if c != FACTORS.len() {
        return Err(SdError::Tensor(candle_core::Error::Msg(format!(
            "an SDXL preview needs 4 latent channels, got {c}"
        ))));
    }
    let factors = Tensor::new(&FACTORS, latents.device())?;
    let bias = Tensor::new(&BIAS, latents.device())?;
    let rgb = latents
        .reshape((c, h * w))?
        .t()?
        .contiguous()?
        .matmul(&factors)? // (h*w, 3)
        .broadcast_add(&bias)?
        .t()?
        .contiguous()?
        .reshape((3, h, w))?;
    crate::output::to_image(&rgb)
}
