//! Diffusion schedulers (samplers), each in its own file behind one trait, found by the names the popular
//! UIs give them (`Euler a`, `DPM++ 2M Karras`) so a catalog entry's recommended sampler selects one.
//!
//! Every scheduler reproduces its diffusers counterpart (same timesteps, sigmas and update rule) for
//! epsilon- and v-prediction; `tests/schedulers.rs` checks them against fixtures recorded with diffusers by
//! `scripts/reference/sd_schedulers.py`.
//!
//! # Adding a scheduler
//! Write `my_scheduler.rs` with a type implementing [`Scheduler`] and a `pub const SPECS: &[SchedulerSpec]`
//! naming it (one entry per UI name it answers to), then add its module name to the `registry!` list below:
//! one new file plus one registration line.

mod config;

pub use config::{BetaSchedule, NoiseSchedule, SchedulerConfig, TimestepSpacing};
use config::{karras_sigmas, sigma_to_t, trailing};

use artifacts_contract::PredictionType;
use candle_core::Tensor;

/// Declares the scheduler modules and collects their specs: the one place a new scheduler is registered.
macro_rules! registry {
    ($($module:ident),* $(,)?) => {
        $(mod $module;)*
        /// Every scheduler this worker offers, in the order they are listed to users.
        static REGISTRY: &[&[SchedulerSpec]] = &[$($module::SPECS),*];
    };
}

registry! {
    euler,
    euler_ancestral,
    ddim,
    dpmpp_2m,
    uni_pc,
    flow_match_euler,
}

pub use flow_match_euler::{FlowMatchConfig, FlowMatchEuler};

/// Why a scheduler could not be built or stepped; each names the offending value.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// A request or catalog entry named a sampler this worker lacks.
    #[error("unknown scheduler {name:?}; known: {known}")]
    UnknownName {
        /// The name as given.
        name: String,
        /// The names this worker knows, comma-separated.
        known: String,
    },
    /// Zero inference steps, or more than the model was trained with.
    #[error("steps must be between 1 and {max}, got {steps}")]
    Steps {
        /// The requested step count.
        steps: usize,
        /// The training timestep count.
        max: usize,
    },
    /// A step index past the schedule, or steps of a multistep scheduler taken out of order.
    #[error("step {step} is out of order or past the schedule of {len} steps")]
    StepIndex {
        /// The step index given.
        step: usize,
        /// The number of steps in the schedule.
        len: usize,
    },
    /// An ancestral scheduler was stepped without the noise it adds.
    #[error("scheduler {0} adds noise at each step: pass it to `step`")]
    MissingNoise(&'static str),
    /// The model predicts something this scheduler cannot use (flow models need a flow scheduler).
    #[error("scheduler {scheduler} does not support {prediction:?} prediction")]
    Prediction {
        /// The scheduler's name.
        scheduler: &'static str,
        /// The model's prediction type.
        prediction: PredictionType,
    },
    /// A diffusers `scheduler_config.json` that does not parse.
    #[error("bad scheduler config: {0}")]
    Config(#[from] serde_json::Error),
    /// A tensor operation failed (mismatched shapes or devices).
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

/// Shorthand for scheduler results.
pub type Result<T> = std::result::Result<T, SchedulerError>;

/// One denoising loop's schedule and update rule, so the generation loop is the same for every sampler.
///
/// Call order, as in diffusers: build with the step count, scale the initial noise by
/// [`init_noise_sigma`](Scheduler::init_noise_sigma), then for each `step` in `0..timesteps().len()`:
/// feed `scale_model_input(sample, step)` and `timesteps()[step]` to the model, then
/// `sample = step(model_output, step, sample, noise)`.
pub trait Scheduler: Send {
    /// The UI name this scheduler was built under, for the PNG parameters and logs.
    fn name(&self) -> &'static str;
    /// The model timesteps of each step, highest first (fractional for some schedulers).
    fn timesteps(&self) -> &[f64];
    /// The noise level of each step plus the final one, for schedulers that work in sigmas.
    fn sigmas(&self) -> Option<&[f64]>;
    /// How much to scale unit Gaussian noise to make the first sample.
    fn init_noise_sigma(&self) -> f64;
    /// The model's input at a step, for schedulers whose samples are not in the model's scale.
    fn scale_model_input(&self, sample: &Tensor, step: usize) -> Result<Tensor>;
    /// Whether `step` needs fresh unit Gaussian noise (ancestral samplers), so callers draw it only then.
    fn needs_noise(&self) -> bool {
        false
    }
    /// The sample of the next step from the model's output at this one. `noise` (the shape of `sample`)
    /// is required when [`needs_noise`](Scheduler::needs_noise) says so, and ignored otherwise.
    fn step(
        &mut self,
        model_output: &Tensor,
        step: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor>;
    /// Starts the schedule at `step` instead of 0 (img2img skips the noisiest steps), for multistep
    /// schedulers that check their steps come in order.
    fn begin_at(&mut self, step: usize) -> Result<()> {
        check_step(step, self.timesteps().len())
    }
    /// A clean sample noised to the level of `step`, where img2img starts (diffusers' `add_noise` after
    /// `set_begin_index(step)`). The default suits schedulers whose samples have unit variance and that
    /// keep sigmas (DPM++, UniPC): `x / sqrt(σ² + 1) + noise · σ / sqrt(σ² + 1)`.
    fn add_noise(&self, original: &Tensor, noise: &Tensor, step: usize) -> Result<Tensor> {
        check_step(step, self.timesteps().len())?;
        let sigma = self.sigmas().map_or(0.0, |sigmas| sigmas[step]);
        let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
        Ok(((original * alpha)? + (noise * (sigma * alpha))?)?)
    }
}

/// A registered scheduler: its names and how to build it, so lookups need no instance.
pub struct SchedulerSpec {
    /// The name as the popular UIs write it (`DPM++ 2M Karras`).
    pub name: &'static str,
    /// Other spellings that select it beyond case and separators (ComfyUI, diffusers class names).
    pub aliases: &'static [&'static str],
    /// Builds it for a noise schedule and a step count.
    pub build: fn(&SchedulerConfig, usize) -> Result<Box<dyn Scheduler>>,
}

/// All registered schedulers.
pub fn specs() -> impl Iterator<Item = &'static SchedulerSpec> {
    REGISTRY.iter().flat_map(|specs| specs.iter())
}

/// The names users can pass, as the UIs write them.
pub fn names() -> Vec<&'static str> {
    specs().map(|spec| spec.name).collect()
}

/// Finds a scheduler by any of its names, ignoring case, spaces, `_`, `-` and `+` so `dpmpp_2m_karras`,
/// `DPM++ 2M Karras` and `dpm++2m karras` agree.
pub fn find(name: &str) -> Result<&'static SchedulerSpec> {
    let wanted = normalize(name);
    specs()
        .find(|spec| {
            std::iter::once(&spec.name)
                .chain(spec.aliases)
                .any(|candidate| normalize(candidate) == wanted)
        })
        .ok_or_else(|| SchedulerError::UnknownName {
            name: name.to_string(),
            known: names().join(", "),
        })
}

/// Builds the scheduler a name selects, for a noise schedule and a step count.
pub fn build(name: &str, config: &SchedulerConfig, steps: usize) -> Result<Box<dyn Scheduler>> {
    (find(name)?.build)(config, steps)
}

/// The name key of [`find`]: lowercase, `+` spelled `p`, separators dropped.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .map(|c| if c == '+' { 'p' } else { c.to_ascii_lowercase() })
        .collect()
}

/// The model's estimate of the clean sample in sigma space (k-diffusion's "denoised"), shared by the
/// Euler family: `x / sqrt(sigma² + 1)` is what the model saw.
fn denoised(
    scheduler: &'static str,
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    sigma: f64,
) -> Result<Tensor> {
    Ok(match prediction {
        PredictionType::Epsilon => (sample - (model_output * sigma)?)?,
        PredictionType::VPrediction => {
            let c_out = -sigma / (sigma * sigma + 1.0).sqrt();
            ((model_output * c_out)? + (sample / (sigma * sigma + 1.0))?)?
        }
        prediction => {
            return Err(SchedulerError::Prediction {
                scheduler,
                prediction,
            });
        }
    })
}

/// Fails on a step index past the schedule.
fn check_step(step: usize, len: usize) -> Result<()> {
    if step < len {
        Ok(())
    } else {
        Err(SchedulerError::StepIndex { step, len })
    }
}

#[cfg(test)]
mod tests;
