//! The tiny SD 1.5-shaped pipeline of `tests/fixtures/sd/tiny-sd15/` (built and recorded by
//! `scripts/reference/sd_tiny_pipeline.py`) and helpers to compare against its reference outputs.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use worker_sd::pipeline::{LoadOptions, Progress};
use worker_sd::request::{Defaults, GenerationRequest, ValidRequest};
use worker_sd::sd::{Parts, SdPipeline};

/// The tiny pipeline's diffusers folder.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sd/tiny-sd15")
}

/// The recorded inputs and outputs of diffusers.
pub fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join("reference.safetensors"), &Device::Cpu).unwrap()
}

/// The tiny pipeline, loaded from its diffusers folder.
pub fn pipeline() -> SdPipeline {
    SdPipeline::new(
        Parts::from_diffusers(&dir(), &Device::Cpu).unwrap(),
        &LoadOptions::cpu("tiny-sd15"),
    )
    .unwrap()
}

/// The largest absolute difference, after checking the shapes agree.
pub fn max_diff(actual: &Tensor, expected: &Tensor) -> f32 {
    assert_eq!(actual.dims(), expected.dims());
    (actual - expected)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Asserts `actual` is within `tol` of `expected`, printing the difference.
pub fn assert_close(what: &str, actual: &Tensor, expected: &Tensor, tol: f32) {
    let diff = max_diff(actual, expected);
    println!("{what}: max |diff| = {diff:e} (tolerance {tol:e})");
    assert!(diff < tol, "{what} differs by {diff}");
}

/// The tiny pipeline's defaults: 64x64, 4 Euler steps, CFG 7.5 (the reference generation's settings).
pub fn defaults() -> Defaults {
    Defaults {
        size: (64, 64),
        steps: 4,
        cfg_scale: 7.5,
        scheduler: "Euler".into(),
        clip_skip: 1,
    }
}

/// The reference generation's request ("a red cat", empty negative prompt) after validation.
pub fn request(change: impl FnOnce(&mut GenerationRequest)) -> ValidRequest {
    let mut request = GenerationRequest {
        prompt: "a red cat".into(),
        seed: Some(0),
        ..Default::default()
    };
    change(&mut request);
    request.validate(&defaults(), 2).unwrap()
}

/// A progress callback that counts the steps.
pub fn count_steps(count: &mut u32) -> impl FnMut(&Progress<'_>) -> worker_sd::Result<()> + '_ {
    move |_| {
        *count += 1;
        Ok(())
    }
}

/// Asserts an 8-bit picture is within one level of a `(1, 3, h, w)` reference image in [-1, 1].
pub fn assert_same_picture(image: &image::RgbImage, expected: &Tensor) {
    let expected = worker_sd::output::to_image(expected).unwrap();
    let worst = image
        .as_raw()
        .iter()
        .zip(expected.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(worst <= 1, "8-bit image differs by {worst} levels");
}
