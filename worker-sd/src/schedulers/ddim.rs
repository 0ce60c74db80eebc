//! DDIM (Song et al. 2020) with eta = 0: diffusers' `DDIMScheduler`. Deterministic, works on integer
//! timesteps in the model's own (variance-preserving) scale.

use super::{NoiseSchedule, Result, Scheduler, SchedulerConfig, SchedulerSpec, TimestepSpacing, check_step, trailing};
use super::SchedulerError;
use artifacts_contract::PredictionType;
use candle_core::Tensor;

/// The registry entry.
pub const SPECS: &[SchedulerSpec] = &[SchedulerSpec {
    name: "DDIM",
    aliases: &["DDIMScheduler"],
    build: |config, steps| Ok(Box::new(Ddim::new(config, steps)?)),
}];

/// Deterministic DDIM steps from one integer timestep to the next.
pub struct Ddim {
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    /// ᾱ after the last step: 1 (noise-free) or the first training timestep's.
    final_alpha_cumprod: f64,
    clip_sample: bool,
}

impl Ddim {
    /// Timesteps for `steps` steps, as diffusers' `set_timesteps`.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let schedule = NoiseSchedule::new(config, steps, "DDIM")?;
        let train = config.num_train_timesteps;
        let timesteps = match schedule.spacing(TimestepSpacing::Leading) {
            TimestepSpacing::Linspace => {
                let step = if steps == 1 { 0.0 } else { (train - 1) as f64 / (steps - 1) as f64 };
                (0..steps).rev().map(|i| (i as f64 * step).round_ties_even()).collect()
            }
            TimestepSpacing::Leading => {
                let ratio = train / steps;
                (0..steps).rev().map(|i| (i * ratio + config.steps_offset) as f64).collect()
            }
            TimestepSpacing::Trailing => trailing(train, steps),
        };
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(true) { 1.0 } else { schedule.alphas_cumprod[0] };
        Ok(Ddim {
            clip_sample: config.clip_sample.unwrap_or(true),
            schedule,
            timesteps,
            final_alpha_cumprod,
        })
    }
}

impl Scheduler for Ddim {
    fn name(&self) -> &'static str {
        "DDIM"
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        None
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, step: usize) -> Result<Tensor> {
        check_step(step, self.timesteps.len())?;
        let alpha = self.schedule.alphas_cumprod[self.timesteps[step] as usize];
        Ok(((original * alpha.sqrt())? + (noise * (1.0 - alpha).sqrt())?)?)
    }

    fn scale_model_input(&self, sample: &Tensor, step: usize) -> Result<Tensor> {
        check_step(step, self.timesteps.len())?;
        Ok(sample.clone())
    }

    fn step(&mut self, model_output: &Tensor, step: usize, sample: &Tensor, _noise: Option<&Tensor>) -> Result<Tensor> {
        check_step(step, self.timesteps.len())?;
        let config = &self.schedule.config;
        let t = self.timesteps[step] as i64;
        let prev_t = t - (config.num_train_timesteps / self.schedule.steps) as i64;
        let alpha = self.schedule.alphas_cumprod[t as usize];
        let alpha_prev = if prev_t >= 0 { self.schedule.alphas_cumprod[prev_t as usize] } else { self.final_alpha_cumprod };
        let beta = 1.0 - alpha;
        let (x0, eps) = match config.prediction_type {
            PredictionType::Epsilon => (((sample - (model_output * beta.sqrt())?)? / alpha.sqrt())?, model_output.clone()),
            PredictionType::VPrediction => (
                ((sample * alpha.sqrt())? - (model_output * beta.sqrt())?)?,
                ((model_output * alpha.sqrt())? + (sample * beta.sqrt())?)?,
            ),
            prediction => return Err(SchedulerError::Prediction { scheduler: "DDIM", prediction }),
        };
        let x0 = if self.clip_sample { x0.clamp(-1.0, 1.0)? } else { x0 };
        Ok(((x0 * alpha_prev.sqrt())? + (eps * (1.0 - alpha_prev).sqrt())?)?)
    }
}
