//! `worker-sd generate`: images from the command line, with progress on stderr and PNGs that carry
//! their parameters.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use worker_sd::request::GenerationRequest;

use super::model::SdModelArgs;

/// Makes images from a prompt and writes them as PNGs.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: SdModelArgs,
    /// What to draw.
    #[arg(long)]
    prompt: String,
    /// What to steer away from.
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// Denoising steps (the model's recommendation by default).
    #[arg(long)]
    steps: Option<u32>,
    /// Classifier-free guidance scale.
    #[arg(long)]
    cfg: Option<f64>,
    /// Seed of the first image (random by default; image i uses seed + i).
    #[arg(long)]
    seed: Option<u64>,
    /// Width in pixels, a multiple of 8.
    #[arg(long)]
    width: Option<u32>,
    /// Height in pixels, a multiple of 8.
    #[arg(long)]
    height: Option<u32>,
    /// Sampler, as the UIs name it (`worker-sd schedulers` lists them).
    #[arg(long)]
    scheduler: Option<String>,
    /// Images to make.
    #[arg(long)]
    batch_size: Option<u32>,
    /// CLIP skip (1 = last layer, 2 = penultimate).
    #[arg(long)]
    clip_skip: Option<u32>,
    /// img2img / inpainting: the image to start from (PNG or JPEG).
    #[arg(long)]
    init_image: Option<PathBuf>,
    /// img2img: how much to repaint, in (0, 1].
    #[arg(long)]
    strength: Option<f64>,
    /// Inpainting: white where to repaint (the init image's size).
    #[arg(long, requires = "init_image")]
    mask: Option<PathBuf>,
    /// Random number generator: `default`, `torch-cpu` (the seeds of ComfyUI and diffusers on CPU) or
    /// `torch-cuda` (AUTOMATIC1111's default).
    #[arg(long)]
    rng: Option<String>,
    /// A LoRA to apply, `ID[:WEIGHT]` (a catalog id, a LoRA entry's name or a `.safetensors` path;
    /// weight 1 by default); repeat for several. `<lora:NAME:WEIGHT>` in the prompt works too.
    #[arg(long = "lora", value_parser = parse_lora)]
    loras: Vec<worker_sd::lora::LoraSpec>,
    /// Folder to write the PNGs to.
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

fn read_image(path: &Path, field: &'static str) -> anyhow::Result<image::DynamicImage> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(worker_sd::upload::decode_image(&bytes, field)?)
}

/// Runs `generate`.
pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let request = GenerationRequest {
        prompt: args.prompt,
        negative_prompt: args.negative_prompt,
        width: args.width,
        height: args.height,
        steps: args.steps,
        cfg_scale: args.cfg,
        seed: args.seed,
        scheduler: args.scheduler,
        batch_size: args.batch_size,
        clip_skip: args.clip_skip,
        init_image: args
            .init_image
            .as_deref()
            .map(|p| read_image(p, "init_image"))
            .transpose()?
            .map(|i| i.to_rgb8()),
        strength: args.strength,
        mask: args
            .mask
            .as_deref()
            .map(|p| read_image(p, "mask"))
            .transpose()?
            .map(|i| i.to_luma8()),
        rng: args.rng,
        loras: args.loras,
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let pipeline = args.model.load()?;
    let started = std::time::Instant::now();
    let images = worker_sd::pipeline::generate(pipeline.as_ref(), request, None, &mut |p, _| {
        eprint!(
            "\rimage {}/{}: step {}/{}",
            p.image + 1,
            p.images,
            p.step,
            p.steps
        );
        let _ = std::io::stderr().flush();
        Ok(())
    })?;
    eprintln!(
        "\r{} image(s) in {:.1} s",
        images.len(),
        started.elapsed().as_secs_f64()
    );
    for report in images.first().map(|i| i.loras.as_slice()).unwrap_or_default() {
        eprintln!(
            "LoRA {} x{}: applied {} of {} tensors",
            report.name, report.weight, report.applied, report.total
        );
        if let Some(warning) = report.warning() {
            eprintln!("warning: {warning}");
        }
    }
    for image in images {
        let path = free_path(&args.out, image.seed);
        worker_sd::output::write_png(&path, &image.image, &image.parameters)?;
        println!("{}", path.display());
    }
    Ok(())
}

/// `ID[:WEIGHT]`: the weight is the last field when it is a number (ids may hold colons).
fn parse_lora(text: &str) -> Result<worker_sd::lora::LoraSpec, String> {
    let (model, weight) = match text.rsplit_once(':') {
        Some((model, w)) if w.parse::<f64>().is_ok() => (model, w.parse().unwrap_or(1.0)),
        _ => (text, 1.0),
    };
    if model.is_empty() {
        return Err("expected ID[:WEIGHT]".into());
    }
    Ok(worker_sd::lora::LoraSpec {
        model: model.to_string(),
        weight,
    })
}

/// `DIR/SEED.png`, or `DIR/SEED-N.png` when taken: never overwrites an earlier image.
fn free_path(dir: &Path, seed: u64) -> PathBuf {
    let first = dir.join(format!("{seed}.png"));
    if !first.exists() {
        return first;
    }
    (1..)
        .map(|n| dir.join(format!("{seed}-{n}.png")))
        .find(|p| !p.exists())
        .expect("an unused name")
}
