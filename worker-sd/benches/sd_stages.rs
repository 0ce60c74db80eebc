//! Times each stage of worker-sd's SD 1.x or SDXL pipeline on a diffusers folder and prints one JSON line:
//! load, text encoding (prompt and negative prompt), seconds per UNet step (CFG, batch 2), VAE decode and
//! the whole generation. `scripts/bench/sd-bench.sh` builds an SD 1.5- or SDXL-shaped folder with random weights and
//! runs this beside diffusers (`scripts/bench/sd_vs_diffusers.py`), which measures peak RSS and prints ratios.
//!
//! `cargo bench -p worker-sd --bench sd_stages -- --model DIR --size 512 --steps 3`

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use worker_sd::pipeline::{ImagePipeline, LoadOptions, generate};
use worker_sd::request::GenerationRequest;
use worker_sd::{sd, sdxl};

mod common;
use common::{arg, number};

fn main() -> anyhow::Result<()> {
    let model = PathBuf::from(arg("--model", ""));
    anyhow::ensure!(model.is_dir(), "--model must name a diffusers folder");
    let (size, steps): (u32, u32) = (number("--size", "512")?, number("--steps", "3")?);
    anyhow::ensure!(
        steps >= 2,
        "--steps must be at least 2 (step time is the gap between steps)"
    );
    let device = Device::Cpu;
    let start = Instant::now();
    let options = LoadOptions::cpu("bench");
    let loaded = if model.join("text_encoder_2").is_dir() {
        Loaded::Sdxl(Box::new(sdxl::SdxlPipeline::new(
            sdxl::Parts::from_diffusers(&model, &device)?,
            &options,
        )?))
    } else {
        Loaded::Sd(Box::new(sd::SdPipeline::new(
            sd::Parts::from_diffusers(&model, &device)?,
            &options,
        )?))
    };
    let pipe: &dyn ImagePipeline = match &loaded {
        Loaded::Sd(p) => p.as_ref(),
        Loaded::Sdxl(p) => p.as_ref(),
    };
    // Text encoding: the prompt and the negative prompt, as one guided generation does; best of 3.
    let tokens = Tensor::new(&[[98u32; 77]], &device)?;
    let encode = || -> anyhow::Result<()> {
        for _ in 0..2 {
            match &loaded {
                Loaded::Sd(p) => drop(p.text_encoder().forward(&tokens)?),
                Loaded::Sdxl(p) => drop(p.text().encode_tokens(&tokens, &tokens, 1)?),
            }
        }
        Ok(())
    };
    let load_s = start.elapsed().as_secs_f64();
    let text_s = (0..3)
        .map(|_| -> anyhow::Result<f64> {
            let start = Instant::now();
            encode()?;
            Ok(start.elapsed().as_secs_f64())
        })
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .fold(f64::INFINITY, f64::min);
    if worker_sd::cpu::profile::enabled() {
        eprint!(
            "text encoding, 3 x 2 prompts:\n{}",
            worker_sd::cpu::profile::take_report()
        );
    }

    let request = |size: u32, steps: u32| GenerationRequest {
        prompt: "a red cat".into(),
        width: Some(size),
        height: Some(size),
        steps: Some(steps),
        cfg_scale: Some(7.5),
        seed: Some(0),
        scheduler: Some("Euler".into()),
        ..Default::default()
    };
    // Warm-up at a small size: thread pools and allocator.
    generate(pipe, request(64, 2), None, &mut |_, _| Ok(()))?;

    let _ = worker_sd::cpu::profile::take_report();
    let mut marks = Vec::new();
    let start = Instant::now();
    generate(pipe, request(size, steps), None, &mut |_, _| {
        marks.push(start.elapsed().as_secs_f64());
        Ok(())
    })?;
    let image_s = start.elapsed().as_secs_f64();
    if worker_sd::cpu::profile::enabled() {
        eprint!("{}", worker_sd::cpu::profile::take_report());
    }
    anyhow::ensure!(marks.len() == steps as usize, "one progress call per step");
    let mut gaps: Vec<f64> = marks.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_by(f64::total_cmp);
    let step_s = gaps[gaps.len() / 2];
    let decode_s = image_s - marks[marks.len() - 1];
    println!(
        "{{\"impl\": \"worker-sd\", \"size\": {size}, \"steps\": {steps}, \"load_s\": {load_s:.4}, \
         \"text_s\": {text_s:.5}, \"step_s\": {step_s:.4}, \"decode_s\": {decode_s:.4}, \"image_s\": {image_s:.4}}}"
    );
    Ok(())
}

/// The pipeline of either base.
enum Loaded {
    Sd(Box<sd::SdPipeline>),
    Sdxl(Box<sdxl::SdxlPipeline>),
}
