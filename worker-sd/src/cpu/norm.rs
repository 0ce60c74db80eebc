//! GroupNorm over NCHW tensors, with the SiLU that follows it in every UNet and VAE resnet fused in: one
//! pass for the mean, one for the variance, one that writes the result.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use super::math::silu;
use super::with_slice;

/// Elements summed in float32 lanes before the partial sum goes into a float64 total.
const CHUNK: usize = 4096;

/// `group_norm(x) * weight + bias`, then SiLU when `with_silu`: `x` `(b, c, ...)` float32 on the CPU,
/// `weight` and `bias` `(c)`.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    eps: f64,
    weight: &Tensor,
    bias: &Tensor,
    with_silu: bool,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let dims = x.dims();
    if dims.len() < 2 || groups == 0 || dims[1] % groups != 0 || weight.elem_count() != dims[1] {
        candle_core::bail!("group_norm: {groups} groups do not fit input {dims:?}");
    }
    let (b, c) = (dims[0], dims[1]);
    let spatial = x.elem_count() / (b * c).max(1);
    let per_group = c / groups * spatial;
    let mut out = vec![0f32; x.elem_count()];
    with_slice(&x, |xs| {
        with_slice(&weight.contiguous()?, |gamma| {
            with_slice(&bias.contiguous()?, |beta| {
                out.par_chunks_mut(per_group)
                    .zip(xs.par_chunks(per_group))
                    .enumerate()
                    .for_each(|(item, (out, xs))| {
                        let g = item % groups;
                        let n = xs.len() as f64;
                        let mean = (sum(xs, |v| v) / n) as f32;
                        let var = sum(xs, |v| (v - mean) * (v - mean)) / n;
                        let inv_std = (1.0 / (var + eps).sqrt()) as f32;
                        let channels = out.chunks_exact_mut(spatial).zip(xs.chunks_exact(spatial));
                        for (ci, (out, xs)) in channels.enumerate() {
                            let channel = g * (c / groups) + ci;
                            let a = inv_std * gamma[channel];
                            let shift = beta[channel] - mean * a;
                            if with_silu {
                                out.iter_mut()
                                    .zip(xs)
                                    .for_each(|(o, &v)| *o = silu(v * a + shift));
                            } else {
                                out.iter_mut().zip(xs).for_each(|(o, &v)| *o = v * a + shift);
                            }
                        }
                    });
            })
        })
    })???;
    Tensor::from_vec(out, dims, x.device())
}

/// `sum of f(x)` over `xs`, in 16 float32 lanes per chunk and float64 across chunks.
fn sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    xs.chunks(CHUNK)
        .map(|chunk| {
            let mut lanes = [0f32; 16];
            let mut it = chunk.chunks_exact(16);
            for part in &mut it {
                for (lane, &v) in lanes.iter_mut().zip(part) {
                    *lane += f(v);
                }
            }
            let rest: f32 = it.remainder().iter().map(|&v| f(v)).sum();
            lanes.iter().map(|&l| l as f64).sum::<f64>() + rest as f64
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::{max_diff, random};
    use candle_core::Module;

    #[test]
    fn matches_candle_group_norm_and_silu() {
        // (batch, channels, h, w, groups): UNet-like, a single group, channels not a power of two.
        for (i, &(b, c, h, w, groups)) in [(2, 64, 9, 11, 32), (1, 6, 40, 40, 1), (3, 12, 5, 3, 4)]
            .iter()
            .enumerate()
        {
            let x = ((random(&[b, c, h, w], i as u64) * 4.0).unwrap() + 1.5).unwrap();
            let weight = random(&[c], 10 + i as u64);
            let bias = random(&[c], 20 + i as u64);
            let norm = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), c, groups, 1e-5).unwrap();
            let want = norm.forward(&x).unwrap();
            let ours = group_norm(&x, groups, 1e-5, &weight, &bias, false).unwrap();
            assert!(
                max_diff(&ours, &want) < 1e-5,
                "case {i}: {}",
                max_diff(&ours, &want)
            );
            let ours = group_norm(&x, groups, 1e-5, &weight, &bias, true).unwrap();
            let want = candle_nn::ops::silu(&want).unwrap();
            assert!(
                max_diff(&ours, &want) < 1e-5,
                "case {i} with SiLU: {}",
                max_diff(&ours, &want)
            );
        }
    }

    #[test]
    fn groups_that_do_not_divide_the_channels_are_an_error() {
        let x = random(&[1, 6, 2, 2], 1);
        let p = random(&[6], 2);
        assert!(group_norm(&x, 4, 1e-5, &p, &p, false).is_err());
    }
}
