//! Times worker-sd's Flux pipeline on the tiny FLUX.1-dev-shaped fixture (tests/fixtures/sd/tiny-flux/dev)
//! and prints one JSON line: seconds per denoising step and per image (encode, steps, decode).
//!
//! `cargo bench -p worker-sd --bench flux -- --size 64 --steps 4 --runs 5`; `scripts/bench/flux-bench.sh`
//! runs it beside diffusers' FluxPipeline on the same weights and prints the ratio.

use candle_core::{DType, Device, Tensor};
use std::path::PathBuf;
use std::time::Instant;
use worker_sd::flux::pipeline::FluxPipeline;

/// The whole number after `name` on the command line, or `default` when absent.
fn arg(name: &str, default: usize) -> anyhow::Result<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name} takes a whole number, got {v:?}")),
    }
}

fn main() -> anyhow::Result<()> {
    let (size, steps, runs) = (arg("--size", 64)?, arg("--steps", 4)?, arg("--runs", 5)?);
    anyhow::ensure!(runs > 0 && steps > 0, "--runs and --steps must be at least 1");
    let device = Device::Cpu;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sd/tiny-flux/dev");
    let pipe = FluxPipeline::load_diffusers_folder(&dir, DType::F32, &device)?;
    let (channels, h, w) = pipe.latent_shape(size, size)?;
    let t5_tokens = Tensor::new(&[[5u32, 17, 42, 8, 23, 1, 0, 0]], &device)?;
    let clip_tokens = Tensor::new(
        &[[98u32, 12, 34, 56, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99]],
        &device,
    )?;
    let noise = Tensor::randn(0f32, 1f32, (1, (h / 2) * (w / 2), channels * 4), &device)?;
    let mut image_s = Vec::new();
    let mut step_s = Vec::new();
    for run in 0..=runs {
        let start = Instant::now();
        let (t5, pooled) = pipe.encode_prompt(&t5_tokens, &clip_tokens)?;
        let denoise_start = Instant::now();
        let latents = pipe.denoise(&t5, &pooled, &noise, size, size, steps, 3.5, &mut |_, _| {})?;
        let denoise = denoise_start.elapsed().as_secs_f64();
        let image = pipe.decode(&latents, size, size)?;
        image.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        if run > 0 {
            // The first run warms caches and allocations.
            image_s.push(start.elapsed().as_secs_f64());
            step_s.push(denoise / steps as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "{{\"impl\": \"candle\", \"size\": {size}, \"steps\": {steps}, \"runs\": {runs}, \"s_per_step\": {:.6}, \"s_per_image\": {:.6}}}",
        median(&mut step_s),
        median(&mut image_s)
    );
    Ok(())
}
