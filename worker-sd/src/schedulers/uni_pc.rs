//! UniPC (Zhao et al. 2023): diffusers' `UniPCMultistepScheduler` with its defaults (order 2, `bh2`,
//! data prediction): a UniC corrector refines each sample with the new model output, then a UniP
//! predictor steps, first order on the first and last step.

use super::dpmpp_2m::{alpha_sigma, lambda, multistep_schedule, vp_x0};
use super::{NoiseSchedule, Result, Scheduler, SchedulerConfig, SchedulerError, SchedulerSpec, check_step};
use artifacts_contract::PredictionType;
use candle_core::Tensor;

/// The registry entry.
pub const SPECS: &[SchedulerSpec] = &[SchedulerSpec {
    name: "UniPC",
    aliases: &["UniPCMultistepScheduler"],
    build: |config, steps| Ok(Box::new(UniPc::new(config, steps)?)),
}];

/// Second-order UniPC predictor-corrector on clean-sample predictions.
pub struct UniPc {
    prediction: PredictionType,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    /// Clean-sample predictions of the last two steps, oldest first.
    outputs: Vec<Tensor>,
    /// The sample the last predictor started from, which the corrector refines.
    last_sample: Option<Tensor>,
    /// The order the last predictor used; the corrector uses the same.
    last_order: usize,
    /// The step `step` must be called with next: the history is only valid in order.
    next: usize,
}

impl UniPc {
    /// Timesteps and sigmas for `steps` steps, as diffusers' `set_timesteps`.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let schedule = NoiseSchedule::new(config, steps, "UniPC")?;
        let (timesteps, sigmas) = multistep_schedule(&schedule, false);
        Ok(UniPc {
            prediction: config.prediction_type,
            timesteps,
            sigmas,
            outputs: Vec::new(),
            last_sample: None,
            last_order: 0,
            next: 0,
        })
    }

    /// One UniP (`corrector: None`) or UniC (`corrector: Some(new output)`) update from sigma index `s0` to
    /// `t`, with `m0` the newest history entry and `m1` the one before when `order` is 2 (diffusers'
    /// `multistep_uni_p_bh_update` / `multistep_uni_c_bh_update` for `bh2`, `predict_x0`).
    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        x: &Tensor,
        s0: usize,
        t: usize,
        m0: &Tensor,
        m1: Option<(&Tensor, usize)>,
        corrector: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[t]);
        let (_, sigma_s0) = alpha_sigma(self.sigmas[s0]);
        let h = lambda(self.sigmas[t]) - lambda(self.sigmas[s0]);
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = hh.exp_m1();
        // b_k = h·φ_k(h)·k! / B(h) for k = 1, 2.
        let h_phi_k1 = h_phi_1 / hh - 1.0;
        let b1 = h_phi_k1 / b_h;
        let h_phi_k2 = h_phi_k1 / hh - 0.5;
        let b2 = h_phi_k2 * 2.0 / b_h;
        let base = ((x * (sigma_t / sigma_s0))? - (m0 * (alpha_t * h_phi_1))?)?;
        // The weights of the history difference D1 and of the corrector's new difference.
        let (d1, rho_d1, rho_new) = match m1 {
            Some((m1, s1)) => {
                let rk = (lambda(self.sigmas[s1]) - lambda(self.sigmas[s0])) / h;
                let d1 = ((m1 - m0)? / rk)?;
                match corrector {
                    // Solve [[1, 1], [rk, 1]] · rho = [b1, b2].
                    Some(_) => {
                        let rho0 = (b1 - b2) / (1.0 - rk);
                        (Some(d1), rho0, b1 - rho0)
                    }
                    None => (Some(d1), 0.5, 0.0),
                }
            }
            None => (None, 0.0, 0.5),
        };
        let mut residual = match d1 {
            Some(d1) => (d1 * rho_d1)?,
            None => m0.zeros_like()?,
        };
        if let Some(model_t) = corrector {
            residual = (residual + ((model_t - m0)? * rho_new)?)?;
        }
        Ok((base - (residual * (alpha_t * b_h))?)?)
    }
}

impl Scheduler for UniPc {
    fn name(&self) -> &'static str {
        "UniPC"
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
        let x0 = vp_x0("UniPC", self.prediction, model_output, sample, self.sigmas[step])?;
        // UniC: refine this sample with the new prediction, from the previous step's starting point.
        let sample = match &self.last_sample {
            Some(last) => {
                let m0 = &self.outputs[self.outputs.len() - 1];
                let m1 = (self.last_order == 2).then(|| (&self.outputs[self.outputs.len() - 2], step - 2));
                self.update(last, step - 1, step, m0, m1, Some(&x0))?
            }
            None => sample.clone(),
        };
        self.outputs.push(x0);
        if self.outputs.len() > 2 {
            self.outputs.remove(0);
        }
        // UniP: order 2 once there is history, first order on the last step.
        let order = 2.min(len - step).min(self.outputs.len());
        let m0 = &self.outputs[self.outputs.len() - 1];
        let m1 = (order == 2).then(|| (&self.outputs[0], step - 1));
        let prev = self.update(&sample, step, step + 1, m0, m1, None)?;
        self.last_sample = Some(sample);
        self.last_order = order;
        self.next = step + 1;
        Ok(prev)
    }
}
