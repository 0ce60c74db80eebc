//! Seeded Gaussian noise: the same seed gives the same image on every platform, and tests can hand in
//! the initial noise a reference implementation used.

use candle_core::{Device, Shape, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::rng::{PhiloxRng, RngKind, TorchCpuRng};

/// The random numbers of one image: its initial latents and any noise an ancestral sampler adds.
pub struct Noise {
    source: Source,
    initial: Option<Tensor>,
}

/// The generator behind a [`Noise`].
enum Source {
    ChaCha(Box<ChaCha8Rng>),
    TorchCpu(Box<TorchCpuRng>),
    TorchCuda(PhiloxRng),
}

impl Noise {
    /// Noise drawn from `seed` (ChaCha8, reproducible across platforms and rand versions).
    pub fn seeded(seed: u64) -> Self {
        Noise::new(RngKind::Default, seed)
    }

    /// Noise drawn from `seed` by the generator `kind` (torch's, to reproduce other tools' images).
    pub fn new(kind: RngKind, seed: u64) -> Self {
        let source = match kind {
            RngKind::Default => Source::ChaCha(Box::new(ChaCha8Rng::seed_from_u64(seed))),
            RngKind::TorchCpu => Source::TorchCpu(Box::new(TorchCpuRng::new(seed))),
            RngKind::TorchCuda => Source::TorchCuda(PhiloxRng::new(seed)),
        };
        Noise {
            source,
            initial: None,
        }
    }

    /// Noise whose first draw is `initial` (unit Gaussian, the latents' shape), then draws from `seed`:
    /// how a generation is compared with diffusers given the same starting noise.
    pub fn with_initial(initial: Tensor, seed: u64) -> Self {
        Noise {
            initial: Some(initial),
            ..Noise::seeded(seed)
        }
    }

    /// The next unit Gaussian tensor of `shape` (the given initial noise first, when there is one).
    pub fn draw(&mut self, shape: impl Into<Shape>, device: &Device) -> candle_core::Result<Tensor> {
        let shape = shape.into();
        if let Some(initial) = self.initial.take() {
            if initial.shape() == &shape {
                return initial.to_device(device);
            }
            return Err(candle_core::Error::ShapeMismatchBinaryOp {
                lhs: initial.shape().clone(),
                rhs: shape,
                op: "initial noise",
            });
        }
        let n = shape.elem_count();
        let values: Vec<f32> = match &mut self.source {
            Source::ChaCha(rng) => (0..n).map(|_| gaussian(rng)).collect(),
            Source::TorchCpu(rng) => rng.randn(n),
            Source::TorchCuda(rng) => rng.randn(n),
        };
        Tensor::from_vec(values, shape, device)
    }
}

/// One standard normal number (Box-Muller).
fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_noise_other_seed_other_noise() {
        let draw = |seed| {
            Noise::seeded(seed)
                .draw((2, 3), &Device::Cpu)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn noise_is_roughly_standard_normal() {
        let t = Noise::seeded(1).draw(10_000, &Device::Cpu).unwrap();
        let mean = t.mean_all().unwrap().to_scalar::<f32>().unwrap();
        let var = t.sqr().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }
}
