//! Flux behind the worker's seam (`pipeline::load`, `ImagePipeline::generate_one`, `pipeline::generate`):
//! prompts through both tokenizers to pictures, matched against diffusers' `FluxPipeline`,
//! `FluxImg2ImgPipeline` and `FluxInpaintPipeline` on the same noise, for the dev folder and for the
//! schnell single file with the dev folder's other parts.
//!
//! Tolerance: images are compared as the 8-bit pictures worker-sd outputs against diffusers' [0, 1]
//! floats, within half a level of rounding plus the 5e-4 a 4-step generation drifts (f32 both sides).

use super::{fixtures, reference};
use artifacts_contract::ImageBase;
use candle_core::{DType, Device, Tensor};
use image::{GrayImage, RgbImage};
use std::collections::HashMap;
use worker_sd::error::SdError;
use worker_sd::flux::FluxImagePipeline;
use worker_sd::flux::tokenizer::T5Tokenizer;
use worker_sd::noise::Noise;
use worker_sd::pipeline::{ImagePipeline, LoadOptions, ModelSource};
use worker_sd::request::GenerationRequest;

/// Largest difference allowed between an 8-bit output (as [0, 1]) and diffusers' float image.
const IMAGE_TOL: f32 = 0.5 / 255.0 + 5e-4;

fn dev_source() -> ModelSource {
    ModelSource::Diffusers(fixtures().join("dev"))
}

fn schnell_source() -> ModelSource {
    ModelSource::SingleFile {
        path: fixtures().join("schnell.safetensors"),
        config: Some(fixtures().join("dev")),
    }
}

fn load(source: &ModelSource) -> Box<dyn ImagePipeline> {
    worker_sd::pipeline::load(source, &LoadOptions::cpu("tiny-flux")).unwrap()
}

fn request(prompt: &str) -> GenerationRequest {
    GenerationRequest {
        prompt: prompt.into(),
        width: Some(64),
        height: Some(64),
        steps: Some(4),
        seed: Some(0),
        ..Default::default()
    }
}

fn prompt() -> String {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap()).unwrap();
    meta["prompt"].as_str().unwrap().to_string()
}

/// Runs one image through the seam with the given first noise; returns it and the steps reported.
fn generate_one(
    pipe: &dyn ImagePipeline,
    request: GenerationRequest,
    noise: &Tensor,
) -> Result<(RgbImage, Vec<(u32, u32)>), SdError> {
    let info = pipe.info().clone();
    let request = request.validate(&info.defaults, info.max_clip_skip)?;
    let mut steps = Vec::new();
    let mut noise = Noise::with_initial(noise.clone(), 0);
    let image = pipe.generate_one(&request, 0, &mut noise, &mut |p| {
        assert_eq!(p.latents.dims(), &[1, 16, 8, 8], "progress latents are unpacked");
        steps.push((p.step, p.steps));
        Ok(())
    })?;
    Ok((worker_sd::output::to_image(&image)?, steps))
}

/// The largest difference between an 8-bit picture and diffusers' (1, 3, h, w) image in [0, 1].
fn image_diff(image: &RgbImage, expected: &Tensor) -> f32 {
    let (w, h) = image.dimensions();
    let ours = Tensor::from_vec(image.as_raw().clone(), (h as usize, w as usize, 3), &Device::Cpu)
        .unwrap()
        .permute((2, 0, 1))
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .affine(1.0 / 255.0, 0.0)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    crate::max_diff(&ours, expected)
}

fn init_image(r: &HashMap<String, Tensor>) -> RgbImage {
    let pixels: Vec<u8> = r["i2i_init"].flatten_all().unwrap().to_vec1().unwrap();
    RgbImage::from_raw(64, 64, pixels).unwrap()
}

#[test]
fn flux_files_are_detected_and_get_the_contracts_defaults() {
    let dev = load(&dev_source());
    let info = dev.info();
    assert_eq!(info.base, ImageBase::Flux);
    // FLUX.1-dev: the contract's 28 steps at guidance 3.5, 1024 px, flow-matching Euler.
    assert_eq!(
        (info.defaults.steps, info.defaults.cfg_scale, info.defaults.size),
        (28, 3.5, (1024, 1024))
    );
    assert_eq!(info.defaults.scheduler, "Flow Match Euler");
    // A transformer without a guidance embedding is schnell: 4 steps, no guidance.
    let schnell = load(&schnell_source());
    assert_eq!(schnell.info().base, ImageBase::Flux);
    assert_eq!(
        (schnell.info().defaults.steps, schnell.info().defaults.cfg_scale),
        (4, 0.0)
    );
}

#[test]
fn tokenizers_match_transformers() {
    let r = reference();
    let pipe = FluxImagePipeline::load(&dev_source(), &LoadOptions::cpu("tiny-flux")).unwrap();
    let (t5, clip) = pipe.tokens(&prompt()).unwrap();
    let ids = |k: &str| -> Vec<u32> {
        r[k].to_dtype(DType::U32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    // dev pads T5 to 512 tokens; CLIP to its 16 positions.
    assert_eq!(t5, ids("prompt_t5_ids"));
    assert_eq!(t5.len(), 512);
    assert_eq!(clip, ids("prompt_clip_ids"));
    // Long prompts are cut with the end token kept.
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap()).unwrap();
    let t5_16 = T5Tokenizer::load(&fixtures().join("dev/tokenizer_2"), 16).unwrap();
    assert_eq!(
        t5_16.encode(meta["long_prompt"].as_str().unwrap()).unwrap(),
        ids("long_t5_ids")
    );
}

#[test]
fn dev_prompt_to_image_matches_flux_pipeline() {
    let r = reference();
    let pipe = load(&dev_source());
    let mut req = request(&prompt());
    req.cfg_scale = Some(3.5);
    let (image, steps) = generate_one(pipe.as_ref(), req, &r["t2i_noise"]).unwrap();
    assert_eq!(steps, vec![(1, 4), (2, 4), (3, 4), (4, 4)]);
    let diff = image_diff(&image, &r["t2i_image"]);
    println!("dev prompt -> image max |diff| = {diff:e}");
    assert!(diff <= IMAGE_TOL, "max |worker-sd - diffusers| = {diff}");
}

#[test]
fn schnell_single_file_prompt_to_image_matches_flux_pipeline() {
    let r = reference();
    let pipe = load(&schnell_source());
    // schnell has no guidance: a cfg_scale is ignored, as diffusers ignores it.
    let mut req = request(&prompt());
    req.cfg_scale = Some(7.0);
    let (image, _) = generate_one(pipe.as_ref(), req, &r["t2i_noise"]).unwrap();
    let diff = image_diff(&image, &r["schnell_t2i_image"]);
    println!("schnell single file prompt -> image max |diff| = {diff:e}");
    assert!(diff <= IMAGE_TOL, "max |worker-sd - diffusers| = {diff}");
}

#[test]
fn vae_encodes_to_the_shifted_and_scaled_mode() {
    let r = reference();
    let pipe = FluxImagePipeline::load(&dev_source(), &LoadOptions::cpu("tiny-flux")).unwrap();
    let pixels = worker_sd::output::from_image(&init_image(&r), &Device::Cpu).unwrap();
    let latents = pipe.pipeline().vae().encode(&pixels).unwrap();
    let diff = crate::max_diff(&latents, &r["vae_encoded"]);
    assert!(diff < 1e-4, "VAE encode max |diff| = {diff}");
}

#[test]
fn img2img_matches_flux_img2img_pipeline() {
    let r = reference();
    let pipe = load(&dev_source());
    let mut req = request(&prompt());
    req.cfg_scale = Some(3.5);
    req.init_image = Some(init_image(&r));
    req.strength = Some(0.6);
    let (image, steps) = generate_one(pipe.as_ref(), req, &r["i2i_noise"]).unwrap();
    // Strength 0.6 of 4 steps: diffusers' Flux pipelines run the last int(4 - 2.4) = 3.
    assert_eq!(steps, vec![(1, 3), (2, 3), (3, 3)]);
    let diff = image_diff(&image, &r["i2i_image"]);
    println!("img2img max |diff| = {diff:e}");
    assert!(diff <= IMAGE_TOL, "max |worker-sd - diffusers| = {diff}");
}

#[test]
fn inpainting_matches_flux_inpaint_pipeline() {
    let r = reference();
    let pipe = load(&dev_source());
    let mut req = request(&prompt());
    req.cfg_scale = Some(3.5);
    req.init_image = Some(init_image(&r));
    let mask: Vec<u8> = r["inp_mask"].flatten_all().unwrap().to_vec1().unwrap();
    req.mask = Some(GrayImage::from_raw(64, 64, mask).unwrap());
    req.strength = Some(0.7);
    let (image, steps) = generate_one(pipe.as_ref(), req, &r["inp_noise"]).unwrap();
    // Strength 0.7 of 4 steps: int(4 - 2.8) = 1 skipped.
    assert_eq!(steps.len(), 3);
    let diff = image_diff(&image, &r["inp_image"]);
    println!("inpainting max |diff| = {diff:e}");
    assert!(diff <= IMAGE_TOL, "max |worker-sd - diffusers| = {diff}");
}

#[test]
fn generate_is_reproducible_with_previews_and_parameters() {
    let pipe = load(&dev_source());
    let run = |seed| {
        let mut previews = Vec::new();
        let mut req = request("a blue dog");
        req.seed = Some(seed);
        req.batch_size = Some(2);
        let images = worker_sd::pipeline::generate(pipe.as_ref(), req, Some(2), &mut |p, preview| {
            if let Some(preview) = preview {
                previews.push((p.image, p.step, preview.dimensions()));
            }
            Ok(())
        })
        .unwrap();
        (images, previews)
    };
    let (first, previews) = run(7);
    // One preview per image at step 2 of 4 (none at the last step), one pixel per latent.
    assert_eq!(previews, vec![(0, 2, (8, 8)), (1, 2, (8, 8))]);
    assert_eq!(first.len(), 2);
    assert_eq!((first[0].seed, first[1].seed), (7, 8));
    assert_ne!(first[0].image, first[1].image);
    assert_eq!(first[0].image.dimensions(), (64, 64));
    assert!(
        first[0]
            .parameters
            .contains("Steps: 4, Sampler: Flow Match Euler, CFG scale: 3.5, Seed: 7"),
        "{}",
        first[0].parameters
    );
    let (again, _) = run(7);
    assert_eq!(again[0].image, first[0].image);
}

#[test]
fn requests_flux_cannot_honour_are_refused_by_field() {
    let pipe = load(&dev_source());
    let noise = Tensor::zeros((1, 16, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let field = |req: GenerationRequest| match generate_one(pipe.as_ref(), req, &noise) {
        Err(SdError::Invalid { field, message }) => (field, message),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("accepted"),
    };
    let mut req = request("a cat");
    req.negative_prompt = "blurry".into();
    assert_eq!(field(req).0, "negative_prompt");
    let mut req = request("a cat");
    req.scheduler = Some("DPM++ 2M".into());
    assert_eq!(field(req).0, "scheduler");
    // 72 is a multiple of 8 (SD's rule) but not of 16 (Flux's 8x VAE and 2x2 packing).
    let mut req = request("a cat");
    req.width = Some(72);
    let (name, message) = field(req);
    assert_eq!(name, "width");
    assert!(message.contains("multiple of 16"), "{message}");
    // `Euler` is the same sampler for a flow model.
    let mut req = request("a cat");
    req.scheduler = Some("Euler".into());
    req.steps = Some(1);
    generate_one(pipe.as_ref(), req, &noise).unwrap();
}

#[test]
fn single_file_without_a_config_folder_names_what_is_missing() {
    let source = ModelSource::SingleFile {
        path: fixtures().join("schnell.safetensors"),
        config: None,
    };
    let err = worker_sd::pipeline::load(&source, &LoadOptions::cpu("x"))
        .err()
        .unwrap();
    let message = err.to_string();
    assert!(matches!(err, SdError::Layout { .. }), "{message}");
    for part in ["text_encoder_2/", "tokenizer_2/", "vae/", "--config-folder"] {
        assert!(message.contains(part), "{message}");
    }
}

#[test]
fn worker_sd_generate_writes_a_flux_png() {
    let out = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_worker-sd"))
        .args(["generate", "--model-path"])
        .arg(fixtures().join("dev"))
        .args([
            "--prompt",
            "a red cat",
            "--width",
            "64",
            "--height",
            "64",
            "--steps",
            "2",
        ])
        .args(["--seed", "3", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let png = out.path().join("3.png");
    let image = image::open(&png).unwrap();
    assert_eq!((image.width(), image.height()), (64, 64));
    let bytes = std::fs::read(&png).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("Sampler: Flow Match Euler"),
        "parameters chunk missing"
    );
}

#[test]
fn dev_single_file_without_prefix_uses_the_folders_scheduler_and_matches() {
    // The dev transformer written as CivitAI ships Flux fine-tunes: one file, BFL names, no prefix.
    let r = reference();
    let dir = tempfile::tempdir().unwrap();
    let tensors = candle_core::safetensors::load(
        fixtures().join("dev/transformer/diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let tensors = worker_sd::flux::weights::original_layout(tensors).unwrap();
    assert!(tensors.contains_key("double_blocks.1.img_attn.qkv.weight"));
    let path = dir.path().join("flux-dev-finetune.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let source = ModelSource::SingleFile {
        path,
        config: Some(fixtures().join("dev")),
    };
    // Detected from the header alone, then loaded with the folder's text encoders, VAE and scheduler.
    let pipe = load(&source);
    assert_eq!(pipe.info().defaults.steps, 28);
    let mut req = request(&prompt());
    req.cfg_scale = Some(3.5);
    let (image, _) = generate_one(pipe.as_ref(), req, &r["t2i_noise"]).unwrap();
    let diff = image_diff(&image, &r["t2i_image"]);
    assert!(diff <= IMAGE_TOL, "max |worker-sd - diffusers| = {diff}");
}

#[test]
fn a_separate_vae_must_be_a_diffusers_folder() {
    let mut options = LoadOptions::cpu("tiny-flux");
    options.vae = Some(fixtures().join("dev/vae"));
    let pipe = worker_sd::pipeline::load(&dev_source(), &options).unwrap();
    assert_eq!(pipe.info().base, ImageBase::Flux);
    options.vae = Some(fixtures().join("dev/vae/diffusion_pytorch_model.safetensors"));
    let err = worker_sd::pipeline::load(&dev_source(), &options).err().unwrap();
    assert!(err.to_string().contains("diffusers vae/ folder"), "{err}");
}
