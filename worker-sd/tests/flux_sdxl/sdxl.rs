//! The SDXL UNet (with its `text_time` added conditioning) against diffusers on the tiny SDXL-shaped UNet
//! of tests/fixtures/sd/tiny-sdxl/ (weights stored in f16, run in f32 on both sides).
//!
//! Tolerance: 1e-4 absolute on one UNet call's outputs of order 1 (f32 on both sides, different summation
//! order); 2e-3 on a whole 4-step CFG run's latents, which reach about 17.

use crate::max_diff;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;
use worker_sd::schedulers::{self, SchedulerConfig};
use worker_sd::sdxl::pipeline::{Denoise, SdxlPrompt, denoise, time_ids};
use worker_sd::sdxl::unet::AddedCond;
use worker_sd::sdxl::{SdxlError, load_unet};

const TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sd/tiny-sdxl")
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("reference.safetensors"), &Device::Cpu).unwrap()
}

#[test]
fn sdxl_unet_call_matches_diffusers() {
    let r = reference();
    let unet = load_unet(&fixtures().join("unet"), DType::F32, &Device::Cpu).unwrap();
    assert!(unet.needs_added_cond());
    let timestep = f64::from(r["unet_timestep"].to_vec1::<f32>().unwrap()[0]);
    let added = AddedCond {
        text_embeds: &r["unet_text_embeds"],
        time_ids: &r["unet_time_ids"],
    };
    let out = unet
        .forward(&r["unet_latents"], timestep, &r["unet_context"], Some(&added))
        .unwrap();
    let diff = max_diff(&out, &r["unet_out"]);
    println!("SDXL UNet max |diff| = {diff:e}");
    assert!(diff < TOL, "max |candle - diffusers| = {diff}");

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
fn sdxl_euler_generation_with_cfg_matches_the_diffusers_pipeline() {
    let r = reference();
    let unet = load_unet(&fixtures().join("unet"), DType::F32, &Device::Cpu).unwrap();
    let json = std::fs::read_to_string(fixtures().join("scheduler/scheduler_config.json")).unwrap();
    let config = SchedulerConfig::from_json(&json).unwrap();
    let mut scheduler = schedulers::build("Euler", &config, 4).unwrap();
    let prompt = |prefix: &str| SdxlPrompt {
        context: r[&format!("gen_{prefix}context")].clone(),
        pooled: r[&format!("gen_{prefix}pooled")].clone(),
    };
    let (positive, negative) = (prompt(""), prompt("negative_"));
    let ids = time_ids((64, 64), (0, 0), (64, 64), &Device::Cpu).unwrap();
    let run = Denoise {
        positive: &positive,
        negative: Some(&negative),
        time_ids: &ids,
        guidance: 5.0,
        noise: &r["gen_noise"],
    };
    let mut steps = 0;
    let latents = denoise(
        &unet,
        scheduler.as_mut(),
        &run,
        &mut |_| panic!("Euler draws no noise"),
        &mut |_, _| steps += 1,
    )
    .unwrap();
    assert_eq!(steps, 4);
    let diff = max_diff(&latents, &r["gen_latents"]);
    println!("SDXL 4-step latents max |diff| = {diff:e}");
    // Latents reach ~17 (init_noise_sigma ~15) and CFG 5 amplifies the UNet's differences: 2e-3 absolute
    // is ~1e-4 relative (7e-4 observed).
    assert!(diff < 2e-3, "max |candle - diffusers| = {diff}");
}
