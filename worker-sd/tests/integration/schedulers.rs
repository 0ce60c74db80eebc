//! Every scheduler against diffusers: timesteps, sigmas and whole short runs recorded by
//! `scripts/reference/sd_schedulers.py` (diffusers 0.42.1) on SD 1.5's scheduler config.
//!
//! Tolerances: timesteps within 1e-3 (they are integers or f32 fractions), sigmas and samples within
//! 2e-5 relative plus 2e-5 absolute: diffusers computes in float32, and its f32 rounding is the difference.

use candle_core::{Device, Tensor};
use serde::Deserialize;
use worker_sd::schedulers::{self, SchedulerConfig};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/sd");
/// Relative and absolute tolerance on sigmas and samples.
const TOL: f64 = 2e-5;
/// Schedulers recorded in the fixture but not implemented yet.
const NOT_YET: &[&str] = &[];

#[derive(Deserialize)]
struct Fixture {
    config: String,
    shape: Vec<usize>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    scheduler: String,
    prediction_type: artifacts_contract::PredictionType,
    #[serde(default)]
    schedules: Vec<Schedule>,
    run: Run,
}

#[derive(Deserialize)]
struct Schedule {
    steps: usize,
    timesteps: Vec<f64>,
    sigmas: Option<Vec<f64>>,
    init_noise_sigma: f64,
}

#[derive(Deserialize)]
struct Run {
    initial_noise: Vec<f32>,
    model_outputs: Vec<Vec<f32>>,
    noises: Vec<Vec<f32>>,
    scaled_inputs: Vec<Vec<f32>>,
    samples: Vec<Vec<f32>>,
}

fn fixture() -> (Fixture, SchedulerConfig) {
    let json = std::fs::read_to_string(format!("{FIXTURES}/schedulers.json")).unwrap();
    let fixture: Fixture = serde_json::from_str(&json).unwrap();
    let config = std::fs::read_to_string(format!("{FIXTURES}/{}", fixture.config)).unwrap();
    (fixture, SchedulerConfig::from_json(&config).unwrap())
}

/// The largest error beyond tolerance, or 0: `|a - b| - TOL * (1 + |b|)`.
fn excess(actual: &[f64], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len());
    actual
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs() - TOL * (1.0 + b.abs()))
        .fold(0.0, f64::max)
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().copied().map(f64::from).collect()
}

#[test]
fn timesteps_and_sigmas_match_diffusers() {
    let (fixture, config) = fixture();
    let mut checked = 0;
    for case in fixture
        .cases
        .iter()
        .filter(|c| !NOT_YET.contains(&c.scheduler.as_str()))
    {
        for expected in &case.schedules {
            check_schedule(&case.scheduler, &config, expected, "SD 1.5");
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        (6 - NOT_YET.len()) * 4,
        "every scheduler's schedules were recorded"
    );
}

#[test]
fn short_runs_match_diffusers_for_epsilon_and_v_prediction() {
    let (fixture, base) = fixture();
    let shape = fixture.shape.as_slice();
    assert_eq!(fixture.cases.len(), 12, "six schedulers, two prediction types");
    for case in fixture
        .cases
        .iter()
        .filter(|c| !NOT_YET.contains(&c.scheduler.as_str()))
    {
        let config = SchedulerConfig {
            prediction_type: case.prediction_type,
            ..base.clone()
        };
        let worst = check_run(&case.scheduler, &config, &case.run, shape);
        println!(
            "{} {:?}: max |diff| / (1 + |expected|) = {worst:.1e}",
            case.scheduler, case.prediction_type
        );
    }
}

/// Checks a scheduler's schedule built from `config` against diffusers'.
fn check_schedule(name: &str, config: &SchedulerConfig, expected: &Schedule, label: &str) {
    let scheduler = schedulers::build(name, config, expected.steps).unwrap();
    let what = format!("{label}: {name} with {} steps", expected.steps);
    let timesteps = scheduler.timesteps();
    assert_eq!(timesteps.len(), expected.timesteps.len(), "{what}");
    for (a, b) in timesteps.iter().zip(&expected.timesteps) {
        assert!(
            (a - b).abs() < 1e-3,
            "{what}: timesteps {timesteps:?} vs {:?}",
            expected.timesteps
        );
    }
    match (scheduler.sigmas(), &expected.sigmas) {
        (Some(actual), Some(sigmas)) => {
            assert!(
                excess(actual, sigmas) <= 0.0,
                "{what}: sigmas {actual:?} vs {sigmas:?}"
            )
        }
        (None, None) => {}
        (actual, sigmas) => panic!("{what}: sigmas {actual:?} vs {sigmas:?}"),
    }
    let init = scheduler.init_noise_sigma();
    assert!(
        excess(&[init], &[expected.init_noise_sigma]) <= 0.0,
        "{what}: init noise sigma {init}"
    );
}

/// Runs a scheduler built from `config` on a recorded run's tensors; the worst relative difference.
fn check_run(name: &str, config: &SchedulerConfig, run: &Run, shape: &[usize]) -> f64 {
    let tensor = |v: &[f32]| Tensor::from_slice(v, shape, &Device::Cpu).unwrap();
    let mut scheduler = schedulers::build(name, config, run.samples.len()).unwrap();
    assert_eq!(scheduler.needs_noise(), !run.noises.is_empty(), "{name}");
    let mut sample = (tensor(&run.initial_noise) * scheduler.init_noise_sigma()).unwrap();
    let mut worst = 0.0f64;
    for step in 0..run.samples.len() {
        let what = format!("{name} {:?} step {step}", config.prediction_type);
        let scaled = scheduler.scale_model_input(&sample, step).unwrap();
        assert!(
            excess(&to_f64(&scaled), &widen(&run.scaled_inputs[step])) <= 0.0,
            "{what}: scaled input"
        );
        let noise = run.noises.get(step).map(|n| tensor(n));
        sample = scheduler
            .step(&tensor(&run.model_outputs[step]), step, &sample, noise.as_ref())
            .unwrap();
        let (actual, expected) = (to_f64(&sample), widen(&run.samples[step]));
        assert!(
            excess(&actual, &expected) <= 0.0,
            "{what}: {actual:?} vs {expected:?}"
        );
        let relative = actual
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()));
        worst = relative.fold(worst, f64::max);
    }
    worst
}

#[derive(Deserialize)]
struct ConfigFixture {
    shape: Vec<usize>,
    configs: Vec<ModelConfig>,
}

#[derive(Deserialize)]
struct ModelConfig {
    label: String,
    config: serde_json::Value,
    cases: Vec<ConfigCase>,
}

#[derive(Deserialize)]
struct ConfigCase {
    scheduler: String,
    schedules: Vec<Schedule>,
    run: Run,
}

/// A sampler chosen by name keeps what the model's own config says (beta schedule, `timestep_spacing`,
/// `steps_offset`, prediction type), as diffusers' `Sampler.from_config(pipe.scheduler.config)` does:
/// recorded by `scripts/reference/sd_scheduler_configs.py` for SD 2.1, SDXL Turbo, SDXL and linear-beta
/// config files.
#[test]
fn a_named_sampler_takes_the_model_config_as_diffusers_from_config_does() {
    let json = std::fs::read_to_string(format!("{FIXTURES}/scheduler-configs.json")).unwrap();
    let fixture: ConfigFixture = serde_json::from_str(&json).unwrap();
    assert_eq!(fixture.configs.len(), 4);
    for model in &fixture.configs {
        let config = SchedulerConfig::from_json(&model.config.to_string()).unwrap();
        assert_eq!(model.cases.len(), 6, "{}", model.label);
        for case in &model.cases {
            for expected in &case.schedules {
                check_schedule(&case.scheduler, &config, expected, &model.label);
            }
            let worst = check_run(&case.scheduler, &config, &case.run, &fixture.shape);
            println!(
                "{} {}: max |diff| / (1 + |expected|) = {worst:.1e}",
                model.label, case.scheduler
            );
        }
    }
}

#[test]
fn catalog_sampler_names_select_a_scheduler() {
    // The names the catalog records as recommended samplers (`ImageConfig::samplers`) build directly.
    let (_, config) = fixture();
    let mut image = artifacts_contract::ImageConfig::new(artifacts_contract::ImageBase::Sd1);
    image.samplers = vec!["DPM++ 2M Karras".into(), "Euler a".into()];
    let params = artifacts_contract::ModelConfig::inference_params(&image);
    let scheduler = schedulers::build(params.sampler.as_deref().unwrap(), &config, 20).unwrap();
    assert_eq!(scheduler.name(), "DPM++ 2M Karras");
    assert_eq!(scheduler.timesteps().len(), 20);
}
