//! DPM-Solver++ 2M (Lu et al. 2022), midpoint second-order multistep: diffusers'
//! `DPMSolverMultistepScheduler` with its defaults, with sigmas evenly spaced in time (`DPM++ 2M`) or
//! Karras-spaced (`DPM++ 2M Karras`).

use super::{
    NoiseSchedule, Result, Scheduler, SchedulerConfig, SchedulerError, SchedulerSpec, TimestepSpacing, check_step,
    karras_sigmas, sigma_to_t, trailing,
};
use artifacts_contract::PredictionType;
use candle_core::Tensor;

/// The registry entries: the same solver on two sigma spacings.
pub const SPECS: &[SchedulerSpec] = &[
    SchedulerSpec {
        name: "DPM++ 2M",
        aliases: &["DPMSolverMultistepScheduler"],
        build: |config, steps| Ok(Box::new(DpmPp2m::new(config, steps, false)?)),
    },
    SchedulerSpec {
        name: "DPM++ 2M Karras",
        aliases: &["DPMSolverMultistepScheduler karras"],
        build: |config, steps| Ok(Box::new(DpmPp2m::new(config, steps, true)?)),
    },
];

/// Second-order multistep DPM-Solver++ on the model's clean-sample predictions; first order on the first
/// and the last step (diffusers' `lower_order_final` with a final sigma of 0).
pub struct DpmPp2m {
    name: &'static str,
    prediction: PredictionType,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    /// The previous step's clean-sample prediction, for the second-order correction.
    previous: Option<Tensor>,
    /// The step `step` must be called with next: the history is only valid in order.
    next: usize,
}

impl DpmPp2m {
    /// Timesteps and sigmas for `steps` steps, as diffusers' `set_timesteps`.
    pub fn new(config: &SchedulerConfig, steps: usize, karras: bool) -> Result<Self> {
        let name = if karras { "DPM++ 2M Karras" } else { "DPM++ 2M" };
        let schedule = NoiseSchedule::new(config, steps, name)?;
        let (timesteps, sigmas) = multistep_schedule(&schedule, karras);
        Ok(DpmPp2m {
            name,
            prediction: config.prediction_type,
            timesteps,
            sigmas,
            previous: None,
            next: 0,
        })
    }

}

/// Timesteps and sigmas (with a final 0) of diffusers' multistep solvers (DPM-Solver++, UniPC), evenly
/// spaced in time or Karras-spaced.
pub(super) fn multistep_schedule(schedule: &NoiseSchedule, karras: bool) -> (Vec<f64>, Vec<f64>) {
    let (config, steps) = (&schedule.config, schedule.steps);
    let train = config.num_train_timesteps;
    let (timesteps, mut sigmas) = if karras {
        let table = schedule.train_sigmas();
        let log_sigmas: Vec<f64> = table.iter().map(|s| f64::from((*s as f32).ln())).collect();
        let sigmas: Vec<f64> = karras_sigmas(table[0], table[train - 1], steps)
            .into_iter()
            .map(|s| f64::from(s as f32))
            .collect();
        let timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &log_sigmas).round_ties_even()).collect();
        (timesteps, sigmas)
    } else {
        let timesteps: Vec<f64> = match schedule.spacing(TimestepSpacing::Linspace) {
            TimestepSpacing::Linspace => {
                let step = (train - 1) as f64 / steps as f64;
                (1..=steps).rev().map(|i| (i as f64 * step).round_ties_even()).collect()
            }
            TimestepSpacing::Leading => {
                let ratio = train / (steps + 1);
                (1..=steps).rev().map(|i| (i * ratio + config.steps_offset) as f64).collect()
            }
            TimestepSpacing::Trailing => trailing(train, steps),
        };
        let sigmas = schedule.sigmas_at(&timesteps);
        (timesteps, sigmas)
    };
    sigmas.push(0.0);
    (timesteps, sigmas)
}

/// The model's clean-sample prediction at a sigma, from its epsilon or v output (diffusers'
/// `convert_model_output` of the data-prediction solvers).
pub(super) fn vp_x0(
    scheduler: &'static str,
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    sigma: f64,
) -> Result<Tensor> {
    let (alpha_t, sigma_t) = alpha_sigma(sigma);
    Ok(match prediction {
        PredictionType::Epsilon => ((sample - (model_output * sigma_t)?)? / alpha_t)?,
        PredictionType::VPrediction => ((sample * alpha_t)? - (model_output * sigma_t)?)?,
        prediction => return Err(SchedulerError::Prediction { scheduler, prediction }),
    })
}

/// The variance-preserving scale and noise level of a sigma: `α = 1/sqrt(σ²+1)`, `σ_t = σ·α`.
pub(super) fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// Half the log signal-to-noise ratio, the solver's time variable (infinite at sigma 0).
pub(super) fn lambda(sigma: f64) -> f64 {
    let (alpha, sigma_t) = alpha_sigma(sigma);
    alpha.ln() - sigma_t.ln()
}

impl Scheduler for DpmPp2m {
    fn name(&self) -> &'static str {
        self.name
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

    fn begin_at(&mut self, step: usize) -> Result<()> {
        check_step(step, self.timesteps.len())?;
        self.next = step;
        Ok(())
    }

    fn scale_model_input(&self, sample: &Tensor, step: usize) -> Result<Tensor> {
        check_step(step, self.timesteps.len())?;
        Ok(sample.clone())
    }

    fn step(&mut self, model_output: &Tensor, step: usize, sample: &Tensor, _noise: Option<&Tensor>) -> Result<Tensor> {
        let len = self.timesteps.len();
        check_step(step, len)?;
        if step != self.next {
            return Err(SchedulerError::StepIndex { step, len });
        }
        let (s0, t) = (self.sigmas[step], self.sigmas[step + 1]);
        let x0 = vp_x0(self.name, self.prediction, model_output, sample, s0)?;
        let (alpha_t, sigma_t) = alpha_sigma(t);
        let (_, sigma_s0) = alpha_sigma(s0);
        let h = lambda(t) - lambda(s0);
        // At the final sigma 0, h is infinite: exp(-h) = 0 and sigma_t = 0 give x_t = x0, as in diffusers.
        let ratio = sigma_t / sigma_s0;
        let coef = alpha_t * ((-h).exp() - 1.0);
        let first_order = (sample * ratio)? - (&x0 * coef)?;
        let prev = match &self.previous {
            Some(m1) if step + 1 < len => {
                let h0 = lambda(s0) - lambda(self.sigmas[step - 1]);
                let d1 = ((&x0 - m1)? * (h / h0))?;
                (first_order? - (d1 * (0.5 * coef))?)?
            }
            _ => first_order?,
        };
        self.previous = Some(x0);
        self.next = step + 1;
        Ok(prev)
    }
}
