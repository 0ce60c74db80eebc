//! The SDXL UNet (with its `text_time` added conditioning) against diffusers on the tiny SDXL-shaped UNet
//! of tests/fixtures/sd/tiny-sdxl/ (weights stored in f16, run in f32 on both sides).
//!
//! Tolerance: 1e-4 absolute on outputs of order 1 (f32 on both sides, different summation order).

use crate::max_diff;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;
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
