//! Euler steps along a rectified flow (Flux, SD3): diffusers' `FlowMatchEulerDiscreteScheduler` as
//! `FluxPipeline` drives it (sigmas `linspace(1, 1/n, n)`, then shifted).
//!
//! The model predicts the velocity `noise - image`; a step moves the sample by `(σ_next - σ) · v`.
//! FLUX.1-schnell uses the plain schedule (`shift` 1); FLUX.1-dev shifts it by the image's size
//! (`use_dynamic_shifting`: `μ` grows linearly with the number of latent tokens), which is why
//! [`FlowMatchEuler::new`] takes the image sequence length.

use super::{Result, Scheduler, SchedulerError, SchedulerSpec, check_step};
use artifacts_contract::PredictionType;
use candle_core::Tensor;
use serde::Deserialize;

/// The registry entry.
pub const SPECS: &[SchedulerSpec] = &[SchedulerSpec {
    name: NAME,
    aliases: &["FlowMatchEulerDiscreteScheduler", "flow_euler"],
    build: |config, steps| {
        check_steps(steps, config.num_train_timesteps)?;
        if config.prediction_type != PredictionType::Flow {
            return Err(SchedulerError::Prediction {
                scheduler: NAME,
                prediction: config.prediction_type,
            });
        }
        let flow = FlowMatchConfig {
            num_train_timesteps: config.num_train_timesteps,
            ..FlowMatchConfig::default()
        };
        Ok(Box::new(FlowMatchEuler::new(&flow, steps, 0)?))
    },
}];

const NAME: &str = "Flow Match Euler";

/// The fields of a flow-matching `scheduler_config.json` (FLUX.1's `scheduler/`), so each Flux variant
/// keeps its own shift; the registry's SD-shaped [`SchedulerConfig`] has no place for them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct FlowMatchConfig {
    /// Timesteps the model was trained with; the model sees `σ · num_train_timesteps`.
    pub num_train_timesteps: usize,
    /// A fixed shift towards high noise, used when `use_dynamic_shifting` is off (1 leaves sigmas as they are).
    pub shift: f64,
    /// Whether the shift follows the image size (FLUX.1-dev) instead of `shift`.
    pub use_dynamic_shifting: bool,
    /// `μ` at `base_image_seq_len` latent tokens.
    pub base_shift: f64,
    /// `μ` at `max_image_seq_len` latent tokens.
    pub max_shift: f64,
    /// Token count where `μ` is `base_shift` (256: a 256² image).
    pub base_image_seq_len: usize,
    /// Token count where `μ` is `max_shift` (4096: a 1024² image).
    pub max_image_seq_len: usize,
}

impl Default for FlowMatchConfig {
    fn default() -> Self {
        FlowMatchConfig {
            num_train_timesteps: 1000,
            shift: 1.0,
            use_dynamic_shifting: false,
            base_shift: 0.5,
            max_shift: 1.15,
            base_image_seq_len: 256,
            max_image_seq_len: 4096,
        }
    }
}

impl FlowMatchConfig {
    /// Reads a diffusers flow-matching `scheduler_config.json`, naming the bad field on failure.
    pub fn from_json(json: &str) -> Result<Self> {
        Ok(serde_json::from_str(json)?)
    }

    /// `μ` of dynamic shifting for an image of `image_seq_len` latent tokens (FluxPipeline's
    /// `calculate_shift`): linear between the base and max points, extrapolated beyond them.
    pub fn mu(&self, image_seq_len: usize) -> f64 {
        let (base, max) = (self.base_image_seq_len as f64, self.max_image_seq_len as f64);
        let slope = (self.max_shift - self.base_shift) / (max - base);
        self.base_shift + slope * (image_seq_len as f64 - base)
    }
}

/// Euler integration of the flow from `σ = 1` (pure noise) to `σ = 0` (the image).
pub struct FlowMatchEuler {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
}

impl FlowMatchEuler {
    /// The schedule of `steps` steps for an image of `image_seq_len` latent tokens (only dynamic
    /// shifting reads it), as `FluxPipeline` sets it up.
    pub fn new(config: &FlowMatchConfig, steps: usize, image_seq_len: usize) -> Result<Self> {
        check_steps(steps, config.num_train_timesteps)?;
        let train = config.num_train_timesteps as f64;
        let mu = config.mu(image_seq_len);
        let mut sigmas: Vec<f64> = (0..steps)
            .map(|i| {
                // np.linspace(1, 1/n, n), then float32 as the scheduler stores it.
                let last = 1.0 / steps as f64;
                let s = if steps == 1 {
                    1.0
                } else {
                    1.0 + (last - 1.0) * i as f64 / (steps - 1) as f64
                };
                let s = f64::from(s as f32);
                let shifted = if config.use_dynamic_shifting {
                    mu.exp() / (mu.exp() + (1.0 / s - 1.0))
                } else {
                    config.shift * s / (1.0 + (config.shift - 1.0) * s)
                };
                f64::from(shifted as f32)
            })
            .collect();
        let timesteps = sigmas.iter().map(|s| f64::from((s * train) as f32)).collect();
        sigmas.push(0.0);
        Ok(FlowMatchEuler { timesteps, sigmas })
    }
}

/// Zero steps, or more than the model was trained with, are refused before anything else.
fn check_steps(steps: usize, max: usize) -> Result<()> {
    if steps == 0 || steps > max {
        return Err(SchedulerError::Steps { steps, max });
    }
    Ok(())
}

impl Scheduler for FlowMatchEuler {
    fn name(&self) -> &'static str {
        NAME
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&self, sample: &Tensor, step: usize) -> Result<Tensor> {
        check_step(step, self.timesteps.len())?;
        Ok(sample.clone())
    }

    fn step(&mut self, model_output: &Tensor, step: usize, sample: &Tensor, _noise: Option<&Tensor>) -> Result<Tensor> {
        check_step(step, self.timesteps.len())?;
        let dt = self.sigmas[step + 1] - self.sigmas[step];
        Ok((sample + (model_output * dt)?)?)
    }

    /// The flow's forward process, diffusers' `scale_noise`: a straight line from the image (σ = 0) to
    /// the noise (σ = 1), `σ · noise + (1 - σ) · x`.
    fn add_noise(&self, original: &Tensor, noise: &Tensor, step: usize) -> Result<Tensor> {
        check_step(step, self.timesteps.len())?;
        let sigma = self.sigmas[step];
        Ok(((noise * sigma)? + (original * (1.0 - sigma))?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::SchedulerConfig;
    use super::*;

    #[test]
    fn epsilon_models_are_refused() {
        let err = super::super::build(NAME, &SchedulerConfig::default(), 4).err().unwrap();
        assert!(
            matches!(err, SchedulerError::Prediction { scheduler: NAME, prediction: PredictionType::Epsilon }),
            "{err}"
        );
    }

    #[test]
    fn add_noise_is_a_straight_line_from_image_to_noise() {
        let device = candle_core::Device::Cpu;
        let s = FlowMatchEuler::new(&FlowMatchConfig::default(), 4, 16).unwrap();
        let x = Tensor::new(&[2.0f32, -2.0], &device).unwrap();
        let noise = Tensor::new(&[1.0f32, 1.0], &device).unwrap();
        // σ = 1 at step 0 gives the noise; σ = 0.5 at step 2 the midpoint.
        let at = |step| s.add_noise(&x, &noise, step).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(at(0), vec![1.0, 1.0]);
        assert_eq!(at(2), vec![1.5, -0.5]);
        assert!(s.add_noise(&x, &noise, 4).is_err());
    }

    #[test]
    fn mu_is_base_and_max_shift_at_the_ends() {
        let config = FlowMatchConfig::default();
        assert!((config.mu(256) - 0.5).abs() < 1e-12);
        assert!((config.mu(4096) - 1.15).abs() < 1e-12);
    }

    #[test]
    fn flux_scheduler_config_parses() {
        let json = r#"{"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0,
            "use_dynamic_shifting": true, "base_image_seq_len": 256, "time_shift_type": "exponential"}"#;
        let config = FlowMatchConfig::from_json(json).unwrap();
        assert!(config.use_dynamic_shifting);
        assert_eq!(config.shift, 3.0);
        assert_eq!(config.max_image_seq_len, 4096);
    }
}
