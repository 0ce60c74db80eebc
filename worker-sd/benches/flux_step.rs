//! Times one call of a Flux transformer from a diffusers `transformer/` folder (random weights at FLUX.1-dev's
//! widths with fewer blocks: `scripts/bench/flux_step_vs_diffusers.py` builds it) at `--size` pixels with
//! 512 T5 tokens, as one guided step of FLUX.1-dev (guidance is an input, one batch item), and prints one
//! JSON line: load time and the median seconds per call.
//!
//! `cargo bench -p worker-sd --bench flux_step -- --model DIR --size 512 --calls 3`

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use worker_sd::flux::FluxTransformer;
use worker_sd::flux::pipeline::img_ids;

mod common;
use common::{arg, number};

fn main() -> anyhow::Result<()> {
    let model = PathBuf::from(arg("--model", ""));
    anyhow::ensure!(
        model.join("transformer").is_dir(),
        "--model must name a folder with a transformer/ folder"
    );
    let (size, calls): (usize, usize) = (number("--size", "512")?, number("--calls", "3")?);
    anyhow::ensure!(
        calls >= 1 && size % 16 == 0,
        "--calls >= 1, --size a multiple of 16"
    );
    let device = Device::Cpu;
    let start = Instant::now();
    let transformer =
        FluxTransformer::load_diffusers_folder(&model.join("transformer"), DType::F32, &device)?;
    let load_s = start.elapsed().as_secs_f64();
    let config = transformer.config().clone();
    let side = size / 16;
    let img = Tensor::randn(0f32, 1., (1, side * side, config.in_channels), &device)?;
    let ids = img_ids(side, side, &device)?.unsqueeze(0)?;
    let txt = Tensor::randn(0f32, 1., (1, 512, config.joint_attention_dim), &device)?;
    let txt_ids = Tensor::zeros((1, 512, 3), DType::F32, &device)?;
    let vec = Tensor::randn(0f32, 1., (1, config.pooled_projection_dim), &device)?;
    let (t, guidance) = (Tensor::new(&[0.5f32], &device)?, Tensor::new(&[3.5f32], &device)?);
    let mut times = Vec::new();
    // The first call warms caches and allocations.
    for call in 0..=calls {
        let start = Instant::now();
        let out = transformer.forward(&img, &ids, &txt, &txt_ids, &t, &vec, Some(&guidance))?;
        out.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        if call > 0 {
            times.push(start.elapsed().as_secs_f64());
        } else {
            let _ = worker_sd::cpu::profile::take_report();
        }
    }
    if worker_sd::cpu::profile::enabled() {
        eprintln!("over {calls} calls (WORKER_SD_PROFILE):");
        eprint!("{}", worker_sd::cpu::profile::take_report());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"impl\": \"worker-sd\", \"size\": {size}, \"load_s\": {load_s:.4}, \"step_s\": {:.4}}}",
        times[times.len() / 2]
    );
    Ok(())
}
