//! The training noise schedule every scheduler derives its steps from, read from a diffusers
//! `scheduler_config.json`, and the timestep and sigma arithmetic the schedulers share.

use super::{Result, SchedulerError};
use artifacts_contract::PredictionType;
use serde::Deserialize;

/// The fields of a diffusers `scheduler_config.json` that shape the schedule, whatever scheduler class the
/// file was written for (SD 1.5 ships a `PNDMScheduler` config; any scheduler here is built from it).
/// Missing fields take diffusers' defaults; a field left `None` takes the chosen scheduler's default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// Timesteps the model was trained with.
    pub num_train_timesteps: usize,
    /// First beta of the training schedule.
    pub beta_start: f64,
    /// Last beta of the training schedule.
    pub beta_end: f64,
    /// How betas go from start to end.
    pub beta_schedule: BetaSchedule,
    /// What the model predicts.
    pub prediction_type: PredictionType,
    /// Added to `leading` timesteps (1 for SD 1.x/2.x, so the last step is timestep 1).
    pub steps_offset: usize,
    /// DDIM: whether the step after the last one is noise-free (`true`) or at `alphas_cumprod[0]`.
    pub set_alpha_to_one: Option<bool>,
    /// How inference timesteps are spread; `None` takes the scheduler's diffusers default.
    pub timestep_spacing: Option<TimestepSpacing>,
    /// DDIM: whether the predicted clean sample is clamped to [-1, 1] (diffusers' default for DDIM is yes;
    /// SD configs say no).
    pub clip_sample: Option<bool>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            prediction_type: PredictionType::Epsilon,
            steps_offset: 0,
            set_alpha_to_one: None,
            timestep_spacing: None,
            clip_sample: None,
        }
    }
}

impl SchedulerConfig {
    /// Reads a diffusers `scheduler_config.json`, naming the bad field on failure.
    pub fn from_json(json: &str) -> Result<Self> {
        Ok(serde_json::from_str(json)?)
    }
}

/// How betas go from `beta_start` to `beta_end` during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// Evenly spaced betas.
    Linear,
    /// Evenly spaced square roots of betas (Stable Diffusion).
    ScaledLinear,
}

/// How the inference timesteps are chosen among the training ones (diffusers' `timestep_spacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// From the last training timestep to 0, evenly.
    Linspace,
    /// Multiples of `train / steps`, plus `steps_offset`.
    Leading,
    /// Multiples of `train / steps` counted down from the last training timestep.
    Trailing,
}

/// A config resolved for one run: the cumulative alphas and the number of steps, checked.
#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    /// The config it came from.
    pub config: SchedulerConfig,
    /// Inference steps.
    pub steps: usize,
    /// Product of `1 - beta` up to each training timestep, computed in f32 as diffusers does.
    pub alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    /// Resolves a config for `steps` steps of a scheduler that supports epsilon and v-prediction.
    pub fn new(config: &SchedulerConfig, steps: usize, scheduler: &'static str) -> Result<Self> {
        let train = config.num_train_timesteps;
        if steps == 0 || steps > train {
            return Err(SchedulerError::Steps { steps, max: train });
        }
        if !matches!(
            config.prediction_type,
            PredictionType::Epsilon | PredictionType::VPrediction
        ) {
            return Err(SchedulerError::Prediction {
                scheduler,
                prediction: config.prediction_type,
            });
        }
        // diffusers builds betas and their cumulative product in float32; doing the same keeps the
        // sigmas within float32 rounding of theirs.
        let (start, end) = match config.beta_schedule {
            BetaSchedule::Linear => (config.beta_start as f32, config.beta_end as f32),
            BetaSchedule::ScaledLinear => {
                ((config.beta_start as f32).sqrt(), (config.beta_end as f32).sqrt())
            }
        };
        let mut product = 1.0f32;
        let alphas_cumprod = (0..train)
            .map(|i| {
                let beta = linspace_f32(start, end, train, i);
                let beta = match config.beta_schedule {
                    BetaSchedule::Linear => beta,
                    BetaSchedule::ScaledLinear => beta * beta,
                };
                product *= 1.0 - beta;
                f64::from(product)
            })
            .collect();
        Ok(NoiseSchedule {
            config: config.clone(),
            steps,
            alphas_cumprod,
        })
    }

    /// The training sigmas, `sqrt((1 - ᾱ) / ᾱ)` per training timestep, rounded to f32 as diffusers does.
    pub fn train_sigmas(&self) -> Vec<f64> {
        self.alphas_cumprod
            .iter()
            .map(|&a| f64::from(((1.0 - a) / a).sqrt() as f32))
            .collect()
    }

    /// The spacing to use: the config's, else the scheduler's default.
    pub fn spacing(&self, default: TimestepSpacing) -> TimestepSpacing {
        self.config.timestep_spacing.unwrap_or(default)
    }

    /// Timesteps of the k-diffusion schedulers (Euler family), highest first: `linspace` is left fractional.
    pub fn euler_timesteps(&self, spacing: TimestepSpacing) -> Vec<f64> {
        let (train, n) = (self.config.num_train_timesteps, self.steps);
        match spacing {
            TimestepSpacing::Linspace => {
                // np.linspace(0, train - 1, n, dtype=float32): computed in f64, then rounded to f32.
                let step = if n == 1 {
                    0.0
                } else {
                    (train - 1) as f64 / (n - 1) as f64
                };
                (0..n)
                    .rev()
                    .map(|i| f64::from((i as f64 * step) as f32))
                    .collect()
            }
            TimestepSpacing::Leading => {
                let ratio = train / n;
                (0..n)
                    .rev()
                    .map(|i| (i * ratio + self.config.steps_offset) as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => trailing(train, n),
        }
    }

    /// Sigmas at (possibly fractional) timesteps, interpolated linearly between training timesteps.
    pub fn sigmas_at(&self, timesteps: &[f64]) -> Vec<f64> {
        let table = self.train_sigmas();
        timesteps
            .iter()
            .map(|&t| f64::from(interp(&table, t) as f32))
            .collect()
    }
}

/// `np.arange(train, 0, -train / n).round() - 1`: the trailing spacing, shared by all schedulers.
pub(super) fn trailing(train: usize, n: usize) -> Vec<f64> {
    let ratio = train as f64 / n as f64;
    (0..n)
        .map(|i| (train as f64 - i as f64 * ratio).round_ties_even() - 1.0)
        .collect()
}

/// Element `i` of `torch.linspace(start, end, n)` in float32 (torch fills the second half from the end).
fn linspace_f32(start: f32, end: f32, n: usize, i: usize) -> f32 {
    if n == 1 {
        return start;
    }
    let step = (end - start) / (n - 1) as f32;
    if i < n / 2 {
        start + step * i as f32
    } else {
        end - step * (n - 1 - i) as f32
    }
}

/// `np.interp(t, arange(len), table)`: linear interpolation on an integer grid, clamped at the ends.
pub(super) fn interp(table: &[f64], t: f64) -> f64 {
    if t <= 0.0 {
        return table[0];
    }
    let last = table.len() - 1;
    if t >= last as f64 {
        return table[last];
    }
    let low = t.floor() as usize;
    let w = t - low as f64;
    table[low] * (1.0 - w) + table[low + 1] * w
}

/// Karras et al. (2022) sigmas: `n` levels from `max` to `min` evenly spaced in `sigma^(1/7)`.
pub(super) fn karras_sigmas(min: f64, max: f64, n: usize) -> Vec<f64> {
    const RHO: f64 = 7.0;
    let (min_inv, max_inv) = (min.powf(1.0 / RHO), max.powf(1.0 / RHO));
    (0..n)
        .map(|i| {
            let ramp = if n == 1 { 0.0 } else { i as f64 / (n - 1) as f64 };
            (max_inv + ramp * (min_inv - max_inv)).powf(RHO)
        })
        .collect()
}

/// The fractional training timestep of a sigma, by interpolating in log-sigma (diffusers' `_sigma_to_t`).
pub(super) fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let below = log_sigmas.iter().filter(|&&l| log_sigma - l >= 0.0).count();
    let low = below.saturating_sub(1).min(log_sigmas.len() - 2);
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}
