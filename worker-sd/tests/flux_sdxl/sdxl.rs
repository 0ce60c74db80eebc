//! The SDXL pipeline against diffusers 0.42.1 on the tiny random SDXL pipeline of
//! tests/fixtures/sd/tiny-sdxl/ (both text encoders and tokenizers, the `text_time` UNet, the VAE),
//! recorded by `scripts/reference/sd_sdxl.py`; weights stored in f16, run in f32 on both sides.
//!
//! Tolerances (max absolute difference; each test prints the one it sees): 1e-4 on single model calls
//! and the text encodings (activations of order 1, different summation order); 2e-3 on whole CFG-5
//! generations, latents (reaching about 15) and decoded images alike, where guidance multiplies the
//! UNet's rounding differences at every step; the same on img2img and inpainting, whose init image also
//! goes through the VAE encoder.

mod embeddings;
mod lora;
mod single_file;

use crate::max_diff;
use candle_core::{DType, Device, IndexOp, Tensor};
use image::{GrayImage, RgbImage};
use std::collections::HashMap;
use std::path::PathBuf;
use worker_sd::noise::Noise;
use worker_sd::pipeline::{self, ImagePipeline, LoadOptions, ModelSource, Progress};
use worker_sd::request::{Defaults, GenerationRequest, ValidRequest};
use worker_sd::schedulers::SchedulerConfig;
use worker_sd::sdxl::unet::AddedCond;
use worker_sd::sdxl::{Parts, SdxlError, SdxlPipeline};

/// Single model calls and text encodings.
const TOL: f32 = 1e-4;
/// Whole generations.
const GEN_TOL: f32 = 2e-3;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sd/tiny-sdxl")
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join("reference.safetensors"), &Device::Cpu).unwrap()
}

fn meta() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("reference.json")).unwrap()).unwrap()
}

fn sdxl() -> SdxlPipeline {
    let parts = Parts::from_diffusers(&dir(), &Device::Cpu).unwrap();
    SdxlPipeline::new(parts, &LoadOptions::cpu("tiny-sdxl")).unwrap()
}

fn assert_close(what: &str, actual: &Tensor, expected: &Tensor, tol: f32) {
    let diff = max_diff(actual, expected);
    println!("SDXL {what}: max |diff| = {diff:e} (tolerance {tol:e})");
    assert!(diff < tol, "{what} differs from diffusers by {diff}");
}

/// The reference runs' request: "a red cat" against "dog", 64x64, 4 Euler steps, CFG 5.
fn request(change: impl FnOnce(&mut GenerationRequest)) -> ValidRequest {
    let mut request = GenerationRequest {
        prompt: "a red cat".into(),
        negative_prompt: "dog".into(),
        seed: Some(0),
        ..Default::default()
    };
    change(&mut request);
    let defaults = Defaults {
        size: (64, 64),
        steps: 4,
        cfg_scale: 5.0,
        scheduler: "Euler".into(),
        clip_skip: 1,
    };
    request.validate(&defaults, 2).unwrap()
}

/// A reference image `(1, 3, h, w)` in [-1, 1] (on the 8-bit grid) as the picture a request carries.
fn to_rgb(tensor: &Tensor) -> RgbImage {
    worker_sd::output::to_image(&tensor.i(0).unwrap()).unwrap()
}

/// The reference inpainting's request: its image and mask, an empty negative prompt, strength 1.
fn inpaint_request(r: &HashMap<String, Tensor>) -> ValidRequest {
    let mask = (r["inp_mask"].i((0, 0)).unwrap() * 255.0)
        .unwrap()
        .to_dtype(DType::U8)
        .unwrap();
    let mask = GrayImage::from_raw(64, 64, mask.flatten_all().unwrap().to_vec1().unwrap()).unwrap();
    request(|q| {
        q.init_image = Some(to_rgb(&r["inp_image"]));
        q.mask = Some(mask);
        q.negative_prompt = String::new();
    })
}

fn latents_of(p: &SdxlPipeline, request: &ValidRequest, noise: &Tensor, steps: &mut u32) -> Tensor {
    let mut noise = Noise::with_initial(noise.clone(), 0);
    let mut count = |_: &Progress<'_>| {
        *steps += 1;
        Ok(())
    };
    p.denoise_prompts(request, 0, &mut noise, &mut count).unwrap()
}

#[test]
fn sdxl_tokenizers_and_text_encoders_match_diffusers() {
    let r = reference();
    let p = sdxl();
    let (tokens, tokens_2) = p.text().tokens("a red cat", &Device::Cpu).unwrap();
    let ids = |t: &Tensor| t.to_dtype(DType::U32).unwrap().to_vec2::<u32>().unwrap();
    assert_eq!(ids(&tokens), ids(&r["tokens"]));
    // tokenizer_2 pads with its own pad token ("!"), not the end token.
    assert_eq!(ids(&tokens_2), ids(&r["tokens_2"]));
    assert_ne!(ids(&tokens), ids(&tokens_2));

    let prompt = p.text().encode_tokens(&tokens, &tokens_2, 1).unwrap();
    assert_close("context", &prompt.context, &r["text_context"], TOL);
    assert_close("pooled", &prompt.pooled, &r["text_pooled"], TOL);
    let negative = p.text().negative("dog", &prompt, 1, &Device::Cpu).unwrap();
    assert_close(
        "negative context",
        &negative.context,
        &r["text_negative_context"],
        TOL,
    );
    assert_close(
        "negative pooled",
        &negative.pooled,
        &r["text_negative_pooled"],
        TOL,
    );
    let skip2 = p.text().encode("a red cat", 2, &Device::Cpu).unwrap();
    assert_close("clip skip 2", &skip2.context, &r["text_context_skip2"], TOL);

    // An empty negative prompt is zeros (force_zeros_for_empty_prompt), as diffusers does.
    let empty = p.text().negative("", &prompt, 1, &Device::Cpu).unwrap();
    assert_eq!(
        max_diff(&empty.context, &prompt.context.zeros_like().unwrap()),
        0.0
    );
    assert_eq!(
        p.info().max_clip_skip,
        2,
        "3-layer encoders: the penultimate layer or the one before"
    );
}

#[test]
fn sdxl_unet_call_matches_diffusers() {
    let r = reference();
    let p = sdxl();
    let unet = p.unet();
    assert!(unet.needs_added_cond());
    let timestep = f64::from(r["unet_timestep"].to_vec1::<f32>().unwrap()[0]);
    let added = AddedCond {
        text_embeds: &r["unet_text_embeds"],
        time_ids: &r["unet_time_ids"],
    };
    let out = unet
        .forward(&r["unet_latents"], timestep, &r["unet_context"], Some(&added))
        .unwrap();
    assert_close("UNet", &out, &r["unet_out"], TOL);

    // The added conditioning matters: other time ids give another output.
    let other_ids = Tensor::new(&[[512f32, 512., 0., 0., 512., 512.]], &Device::Cpu).unwrap();
    let other = AddedCond {
        time_ids: &other_ids,
        ..added
    };
    let out = unet
        .forward(&r["unet_latents"], timestep, &r["unet_context"], Some(&other))
        .unwrap();
    let moved = max_diff(&out, &r["unet_out"]);
    assert!(
        moved > 100.0 * TOL,
        "other time ids moved the output by only {moved}"
    );

    let err = unet
        .forward(&r["unet_latents"], timestep, &r["unet_context"], None)
        .err()
        .unwrap();
    assert!(
        matches!(&err, SdxlError::Config(m) if m.contains("time_ids")),
        "{err}"
    );
}

#[test]
fn sdxl_txt2img_with_cfg_matches_the_diffusers_pipeline() {
    let r = reference();
    let p = sdxl();
    let req = request(|_| {});
    let mut steps = 0;
    let latents = latents_of(&p, &req, &r["gen_noise"], &mut steps);
    assert_eq!(steps, 4);
    assert_close("4-step Euler latents", &latents, &r["gen_latents"], GEN_TOL);
    let mut noise = Noise::with_initial(r["gen_noise"].clone(), 0);
    let image = p.generate_one(&req, 0, &mut noise, &mut |_| Ok(())).unwrap();
    assert_close(
        "4-step Euler image",
        &image.unsqueeze(0).unwrap(),
        &r["gen_image"],
        GEN_TOL,
    );
}

#[test]
fn sdxl_turbo_one_step_euler_a_trailing_without_guidance_matches_diffusers() {
    let r = reference();
    let mut p = sdxl();
    let turbo = SchedulerConfig::from_json(&meta()["turbo_scheduler"].to_string()).unwrap();
    p.set_scheduler(turbo);
    let req = request(|q| {
        q.steps = Some(1);
        q.cfg_scale = Some(0.0);
        q.scheduler = Some("Euler a".into());
        q.negative_prompt = String::new();
    });
    let mut steps = 0;
    let latents = latents_of(&p, &req, &r["gen_noise"], &mut steps);
    assert_eq!(steps, 1);
    assert_close("Turbo latents", &latents, &r["turbo_latents"], GEN_TOL);
}

#[test]
fn sdxl_img2img_matches_the_diffusers_pipeline() {
    let r = reference();
    let p = sdxl();
    let req = request(|q| {
        q.init_image = Some(to_rgb(&r["i2i_image"]));
        q.strength = Some(0.75);
        q.negative_prompt = String::new();
    });
    let mut steps = 0;
    let latents = latents_of(&p, &req, &r["i2i_noise"], &mut steps);
    assert_eq!(steps, 3, "strength 0.75 of 4 steps runs the last 3");
    assert_close("img2img latents", &latents, &r["i2i_latents"], GEN_TOL);
}

#[test]
fn sdxl_inpainting_with_a_4_channel_unet_matches_the_diffusers_pipeline() {
    let r = reference();
    let p = sdxl();
    assert!(!p.info().inpaint_model);
    let mask = (r["inp_mask"].i((0, 0)).unwrap() * 255.0)
        .unwrap()
        .to_dtype(DType::U8)
        .unwrap();
    let mask = GrayImage::from_raw(64, 64, mask.flatten_all().unwrap().to_vec1().unwrap()).unwrap();
    let req = request(|q| {
        q.init_image = Some(to_rgb(&r["inp_image"]));
        q.mask = Some(mask);
        q.negative_prompt = String::new();
    });
    let mut steps = 0;
    let latents = latents_of(&p, &req, &r["inp_noise"], &mut steps);
    assert_eq!(steps, 4);
    assert_close("inpainting latents", &latents, &r["inp_latents"], GEN_TOL);
}

#[test]
fn sdxl_loads_and_generates_through_the_public_api() {
    let source = ModelSource::Diffusers(dir());
    let p = pipeline::load(&source, &LoadOptions::cpu("tiny-sdxl")).unwrap();
    let info = p.info();
    assert_eq!(
        info.base,
        artifacts_contract::ImageBase::Sdxl,
        "detected from the folder"
    );
    // The contract's SDXL defaults (its leading-spacing Euler schedule is not Turbo's).
    assert_eq!((info.defaults.size, info.defaults.steps), ((1024, 1024), 30));
    let run = |seed| {
        let request = GenerationRequest {
            prompt: "a red cat".into(),
            seed: Some(seed),
            steps: Some(2),
            scheduler: Some("euler_a".into()),
            width: Some(64),
            height: Some(80),
            ..Default::default()
        };
        let mut steps = 0;
        let images = pipeline::generate(p.as_ref(), request, Some(1), &mut |progress, _| {
            steps = progress.step;
            Ok(())
        })
        .unwrap();
        assert_eq!(steps, 2);
        images
    };
    let (a, b) = (run(7), run(7));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].image.dimensions(), (64, 80));
    assert_eq!(a[0].image, b[0].image, "same seed, same image");
    assert_ne!(a[0].image, run(8)[0].image, "another seed, another image");
    let png = worker_sd::output::png_bytes(&a[0].image, &a[0].parameters).unwrap();
    let text = worker_sd::output::read_parameters(&png).unwrap();
    assert!(
        text.contains("Sampler: Euler a") && text.contains("Model: tiny-sdxl"),
        "{text}"
    );

    // Bad input is refused by field, and the latent preview works.
    let bad = GenerationRequest {
        prompt: "x".into(),
        width: Some(100),
        ..Default::default()
    };
    let err = pipeline::generate(p.as_ref(), bad, None, &mut |_, _| Ok(()))
        .err()
        .unwrap();
    assert!(
        matches!(err, worker_sd::SdError::Invalid { field: "width", .. }),
        "{err}"
    );
    let preview = p
        .preview(&Tensor::zeros((1, 4, 6, 8), DType::F32, &Device::Cpu).unwrap())
        .unwrap();
    assert_eq!(preview.dimensions(), (8, 6));
}

#[test]
fn sdxl_turbo_defaults_come_from_the_contract_when_the_schedule_is_trailing() {
    let home = tempfile::tempdir().unwrap();
    let folder = home.path().join("tiny-sdxl-turbo");
    copy_dir(&dir(), &folder);
    let turbo = meta()["turbo_scheduler"].to_string();
    std::fs::write(folder.join("scheduler/scheduler_config.json"), turbo).unwrap();
    let p = pipeline::load(&ModelSource::Diffusers(folder), &LoadOptions::cpu("turbo")).unwrap();
    let d = &p.info().defaults;
    assert_eq!(
        (d.size, d.steps, d.cfg_scale, d.scheduler.as_str()),
        ((512, 512), 1, 0.0, "Euler a")
    );
    // A single file is detected from its tensor names.
    let file = ModelSource::SingleFile {
        path: dir().with_extension("safetensors"),
        config: None,
    };
    assert_eq!(
        pipeline::BASES.iter().find_map(|spec| (spec.detect)(&file)),
        Some(artifacts_contract::ImageBase::Sdxl)
    );
}

/// Copies a fixture folder, to change a file of it in a temporary home.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}
