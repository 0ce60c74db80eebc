//! Euler (Karras et al. 2022, algorithm 2 without churn): diffusers' `EulerDiscreteScheduler`.

use super::{
    NoiseSchedule, Result, Scheduler, SchedulerConfig, SchedulerSpec, TimestepSpacing, check_step, denoised,
};
use candle_core::Tensor;

/// The registry entry.
pub const SPECS: &[SchedulerSpec] = &[SchedulerSpec {
    name: "Euler",
    aliases: &["EulerDiscreteScheduler"],
    build: |config, steps| Ok(Box::new(Euler::new(config, steps)?)),
}];

/// Plain Euler steps in sigma space: deterministic, a good default for most SD checkpoints.
pub struct Euler {
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
}

impl Euler {
    /// Timesteps and sigmas for `steps` steps, as diffusers' `set_timesteps`.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let schedule = NoiseSchedule::new(config, steps, "Euler")?;
        let (timesteps, sigmas, init_noise_sigma) = sigma_schedule(&schedule);
        Ok(Euler {
            schedule,
            timesteps,
            sigmas,
            init_noise_sigma,
        })
    }
}

/// Timesteps, sigmas (with a final 0) and the initial noise scale of the Euler family.
pub(super) fn sigma_schedule(schedule: &NoiseSchedule) -> (Vec<f64>, Vec<f64>, f64) {
    let spacing = schedule.spacing(TimestepSpacing::Linspace);
    let timesteps = schedule.euler_timesteps(spacing);
    let mut sigmas = schedule.sigmas_at(&timesteps);
    let max = sigmas.iter().copied().fold(0.0, f64::max);
    sigmas.push(0.0);
    let init_noise_sigma = match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
        TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
    };
    (timesteps, sigmas, init_noise_sigma)
}

/// `sample / sqrt(sigma² + 1)`: the Euler family keeps samples in sigma scale, the model wants unit variance.
pub(super) fn scale_by_sigma(sample: &Tensor, sigma: f64) -> Result<Tensor> {
    Ok((sample / (sigma * sigma + 1.0).sqrt())?)
}

impl Scheduler for Euler {
    fn name(&self) -> &'static str {
        "Euler"
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, step: usize) -> Result<Tensor> {
        check_step(step, self.timesteps.len())?;
        Ok((original + (noise * self.sigmas[step])?)?)
    }

    fn scale_model_input(&self, sample: &Tensor, step: usize) -> Result<Tensor> {
        check_step(step, self.timesteps.len())?;
        scale_by_sigma(sample, self.sigmas[step])
    }

    fn step(&mut self, model_output: &Tensor, step: usize, sample: &Tensor, _noise: Option<&Tensor>) -> Result<Tensor> {
        check_step(step, self.timesteps.len())?;
        let (sigma, next) = (self.sigmas[step], self.sigmas[step + 1]);
        let x0 = denoised("Euler", self.schedule.config.prediction_type, model_output, sample, sigma)?;
        let derivative = ((sample - &x0)? / sigma)?;
        Ok((sample + (derivative * (next - sigma))?)?)
    }
}
