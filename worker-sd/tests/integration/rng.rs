//! `--rng torch-cpu` and `torch-cuda` against torch's own noise and a whole diffusers generation from a
//! seed alone, recorded by `scripts/reference/sd_rng.py` in `tests/fixtures/sd/rng/`.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use worker_sd::noise::Noise;
use worker_sd::pipeline::ImagePipeline;
use worker_sd::rng::RngKind;

use crate::common::{assert_close, dir, pipeline, request};

/// Float32 noise: the same algorithm, libm's last-bit rounding of `log`, `sin` and `cos` aside.
const NOISE_TOL: f32 = 1e-5;
/// Whole generations, as in `tiny_sd15.rs`.
const GEN_TOL: f32 = 2e-3;

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join("../rng/reference.safetensors"), &Device::Cpu).unwrap()
}

/// The recorded cases: name, seed, and the shapes drawn one after the other (as in `sd_rng.py`).
fn cases() -> Vec<(&'static str, u64, Vec<Vec<usize>>)> {
    vec![
        ("latent", 0, vec![vec![1, 4, 8, 8]]),
        ("tail", 7, vec![vec![37]]),
        ("small", 3, vec![vec![5], vec![4]]),
        ("big_seed", (1 << 32) + 11, vec![vec![1, 4, 8, 8]]),
        ("two_draws", 123_456_789, vec![vec![1, 4, 8, 8], vec![1, 4, 8, 8]]),
    ]
}

fn check_noise(kind: RngKind, prefix: &str) {
    let r = reference();
    for (name, seed, shapes) in cases() {
        let mut noise = Noise::new(kind, seed);
        for (i, shape) in shapes.into_iter().enumerate() {
            let drawn = noise.draw(shape, &Device::Cpu).unwrap();
            let key = format!("{prefix}_{name}_{i}");
            assert_close(&key, &drawn, &r[&key], NOISE_TOL);
        }
    }
}

#[test]
fn torch_cpu_noise_matches_torch_randn() {
    check_noise(RngKind::TorchCpu, "cpu");
}

#[test]
fn torch_cuda_noise_matches_the_philox_emulation() {
    check_noise(RngKind::TorchCuda, "cuda");
}

#[test]
fn a_seed_alone_gives_diffusers_image_with_a_cpu_generator() {
    let r = reference();
    let p = pipeline();
    let req = request(|r| {
        r.scheduler = Some("Euler a".into());
        r.seed = Some(42);
        r.rng = Some("torch-cpu".into());
    });
    let mut noise = Noise::new(req.rng, 42);
    let image = p.generate_one(&req, 0, &mut noise, &mut |_| Ok(())).unwrap();
    assert_close(
        "4-step Euler a image from seed 42",
        &image.unsqueeze(0).unwrap(),
        &r["seed_image"],
        GEN_TOL,
    );
    // The default generator draws other noise: the comparison above can fail.
    let mut other = Noise::new(RngKind::Default, 42);
    let image = p.generate_one(&req, 0, &mut other, &mut |_| Ok(())).unwrap();
    let diff = crate::common::max_diff(&image.unsqueeze(0).unwrap(), &r["seed_image"]);
    assert!(
        diff > 0.05,
        "the default generator should not match torch's ({diff})"
    );
}

#[test]
fn the_png_parameters_name_a_torch_generator() {
    let p = pipeline();
    let request = worker_sd::request::GenerationRequest {
        prompt: "a red cat".into(),
        seed: Some(42),
        steps: Some(1),
        rng: Some("torch-cpu".into()),
        ..Default::default()
    };
    let images = worker_sd::pipeline::generate(&p, request, None, &mut |_, _| Ok(())).unwrap();
    assert!(
        images[0].parameters.contains(", RNG: CPU"),
        "{}",
        images[0].parameters
    );
    let bad = worker_sd::request::GenerationRequest {
        prompt: "a red cat".into(),
        rng: Some("mersenne".into()),
        ..Default::default()
    };
    let err = worker_sd::pipeline::generate(&p, bad, None, &mut |_, _| Ok(()))
        .err()
        .expect("an unknown generator is refused");
    assert!(err.to_string().contains("rng"), "{err}");
}
