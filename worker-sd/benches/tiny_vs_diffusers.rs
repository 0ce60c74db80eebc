//! Seconds per denoising step and per image of worker-sd against diffusers on the tiny pipelines of
//! `tests/fixtures/sd/tiny-sd15` and `tests/fixtures/sd/tiny-sdxl`, printed side by side with the ratio
//! (worker-sd / diffusers; below 1 means worker-sd is faster).
//!
//! ```text
//! cargo bench -p worker-sd --bench tiny_vs_diffusers
//! ```
//!
//! Same settings on both sides: prompt "a red cat", CFG 7.5, Euler, 20 steps, CPU, float32; best of 3
//! runs after a warm-up; per step = (20-step time - 1-step time) / 19. The diffusers side runs
//! `scripts/reference/sd_bench_diffusers.py` with `REF_PYTHON` (default: the Python `bash scripts/reference/venv.sh` makes);
//! without it only worker-sd's figures print. `BENCH_THREADS=N` gives both sides N threads (candle via
//! `RAYON_NUM_THREADS`, torch via `set_num_threads`); on a busy machine use 1.

use std::path::PathBuf;
use std::time::Instant;

use worker_sd::pipeline::{ImagePipeline, LoadOptions, ModelSource, generate};
use worker_sd::request::GenerationRequest;

const CASES: &[(u32, u32)] = &[(64, 20), (256, 20)];
/// (fixture folder, what it is).
const PIPELINES: &[(&str, &str)] = &[
    ("tiny-sd15", "tiny SD 1.5-shaped pipeline"),
    (
        "tiny-sdxl",
        "tiny SDXL pipeline (two text encoders, text_time UNet)",
    ),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn best(pipeline: &dyn ImagePipeline, size: u32, steps: u32, runs: usize) -> f64 {
    (0..runs)
        .map(|_| {
            let request = GenerationRequest {
                prompt: "a red cat".into(),
                width: Some(size),
                height: Some(size),
                steps: Some(steps),
                cfg_scale: Some(7.5),
                seed: Some(0),
                scheduler: Some("Euler".into()),
                ..Default::default()
            };
            let start = Instant::now();
            generate(pipeline, request, None, &mut |_, _| Ok(())).expect("generation runs");
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn diffusers(fixture: &str) -> Vec<serde_json::Value> {
    let python = std::env::var("REF_PYTHON").unwrap_or_else(|_| {
        let venv = root().join("scripts/reference/venv.sh");
        let out = std::process::Command::new("bash")
            .arg(venv)
            .output()
            .expect("bash runs scripts/reference/venv.sh");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("python3")
            .to_string()
    });
    let script = root().join("scripts/reference/sd_bench_diffusers.py");
    let args: Vec<String> = CASES
        .iter()
        .flat_map(|(s, n)| [s.to_string(), n.to_string()])
        .collect();
    match std::process::Command::new(&python)
        .arg(&script)
        .arg(fixture)
        .args(&args)
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
        Ok(out) => {
            eprintln!(
                "diffusers benchmark failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Vec::new()
        }
        Err(e) => {
            eprintln!("no reference Python at {python} ({e}); set REF_PYTHON");
            Vec::new()
        }
    }
}

fn main() {
    if let Ok(threads) = std::env::var("BENCH_THREADS") {
        // SAFETY: set before any thread starts; candle reads it when it sizes its thread pool.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads) };
    }
    for &(fixture, what) in PIPELINES {
        run(fixture, what);
    }
}

fn run(fixture: &str, what: &str) {
    let source = ModelSource::Diffusers(root().join("tests/fixtures/sd").join(fixture));
    let pipeline =
        worker_sd::pipeline::load(&source, &LoadOptions::cpu(fixture)).expect("the tiny pipeline loads");
    let mut ours = Vec::new();
    for &(size, steps) in CASES {
        best(pipeline.as_ref(), size, 2, 1);
        let image = best(pipeline.as_ref(), size, steps, 3);
        let one = best(pipeline.as_ref(), size, 1, 3);
        ours.push((size, steps, image, (image - one) / f64::from(steps.max(2) - 1)));
    }
    let reference = diffusers(fixture);
    println!("{what}, CPU float32, CFG 7.5, Euler (best of 3)");
    println!(
        "{:>6} {:>5} | {:>12} {:>12} | {:>12} {:>12} | {:>7} {:>7}",
        "size", "steps", "ours s/image", "ours s/step", "diff s/image", "diff s/step", "image x", "step x"
    );
    for (size, steps, image, step) in ours {
        let theirs = reference
            .iter()
            .find(|r| r["size"] == size && r["steps"] == steps);
        let (ti, ts) = theirs.map_or((f64::NAN, f64::NAN), |r| {
            (
                r["image_s"].as_f64().unwrap_or(f64::NAN),
                r["step_s"].as_f64().unwrap_or(f64::NAN),
            )
        });
        println!(
            "{size:>6} {steps:>5} | {image:>12.4} {step:>12.5} | {ti:>12.4} {ts:>12.5} | {:>7.2} {:>7.2}",
            image / ti,
            step / ts
        );
    }
}
