//! Euler ancestral (`Euler a`): diffusers' `EulerAncestralDiscreteScheduler`. Each step goes below the next
//! noise level and adds fresh noise back, so results vary with the noise and converge less.

use super::euler::{scale_by_sigma, sigma_schedule};
use super::{NoiseSchedule, Result, Scheduler, SchedulerConfig, SchedulerError, SchedulerSpec, check_step, denoised};
use candle_core::Tensor;

/// The registry entry.
pub const SPECS: &[SchedulerSpec] = &[SchedulerSpec {
    name: "Euler a",
    aliases: &["euler_ancestral", "EulerAncestralDiscreteScheduler"],
    build: |config, steps| Ok(Box::new(EulerAncestral::new(config, steps)?)),
}];

/// Ancestral Euler steps in sigma space; the noise of each step is passed in by the caller.
pub struct EulerAncestral {
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
}

impl EulerAncestral {
    /// Timesteps and sigmas for `steps` steps, as diffusers' `set_timesteps`.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let schedule = NoiseSchedule::new(config, steps, "Euler a")?;
        let (timesteps, sigmas, init_noise_sigma) = sigma_schedule(&schedule);
        Ok(EulerAncestral {
            schedule,
            timesteps,
            sigmas,
            init_noise_sigma,
        })
    }
}

impl Scheduler for EulerAncestral {
    fn name(&self) -> &'static str {
        "Euler a"
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

    fn needs_noise(&self) -> bool {
        true
    }

    fn step(&mut self, model_output: &Tensor, step: usize, sample: &Tensor, noise: Option<&Tensor>) -> Result<Tensor> {
        check_step(step, self.timesteps.len())?;
        let noise = noise.ok_or(SchedulerError::MissingNoise("Euler a"))?;
        let (from, to) = (self.sigmas[step], self.sigmas[step + 1]);
        let x0 = denoised("Euler a", self.schedule.config.prediction_type, model_output, sample, from)?;
        let up = (to * to * (from * from - to * to) / (from * from)).sqrt();
        let down = (to * to - up * up).sqrt();
        let derivative = ((sample - &x0)? / from)?;
        let prev = (sample + (derivative * (down - from))?)?;
        Ok((prev + (noise * up)?)?)
    }
}
