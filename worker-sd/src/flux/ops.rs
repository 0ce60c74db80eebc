//! The Flux transformer's elementwise steps, each one pass over its rows split over the threads on float32
//! CPU tensors (Candle's ops otherwise): LayerNorm with the modulation that follows it, QK-norm with the
//! rotary embedding written straight into attention's `(batch, tokens, heads * dim)` layout, GELU, and the
//! gated residual add. Candle's CPU path takes each of these as several single-threaded tensor passes.

use candle_core::{D, Device, Result, Tensor};
use rayon::prelude::*;

use crate::cpu::{self, math, with_rows, with_slice};

/// Rows per parallel work item: enough to amortise the hand-out, few enough to balance the threads.
const ROWS: usize = 16;

fn cpu_f32(ts: &[&Tensor]) -> bool {
    ts.iter().all(|t| cpu::applies(t))
}

/// `(1 + scale) * LayerNorm(x) + shift` (no affine weights, eps 1e-6): `x` `(b, n, w)`, `shift` and `scale`
/// `(b, 1, w)`.
pub fn modulated_norm(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    const EPS: f32 = 1e-6;
    if !cpu_f32(&[x, shift, scale]) {
        let normed = candle_nn::ops::layer_norm_slow(
            x,
            &Tensor::ones(x.dim(D::Minus1)?, x.dtype(), x.device())?,
            &Tensor::zeros(x.dim(D::Minus1)?, x.dtype(), x.device())?,
            EPS,
        )?;
        return normed.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(shift);
    }
    let (x, shift, scale) = (x.contiguous()?, shift.contiguous()?, scale.contiguous()?);
    let (b, n, w) = x.dims3()?;
    let mut out = vec![0f32; b * n * w];
    with_slice(&x, |xs| {
        with_slice(&shift, |sh| {
            with_slice(&scale, |sc| {
                out.par_chunks_mut(ROWS * w)
                    .zip(xs.par_chunks(ROWS * w))
                    .enumerate()
                    .for_each(|(item, (out, xs))| {
                        for (r, (o, x)) in out.chunks_exact_mut(w).zip(xs.chunks_exact(w)).enumerate() {
                            let batch = (item * ROWS + r) / n;
                            let (shift, scale) = (&sh[batch * w..][..w], &sc[batch * w..][..w]);
                            let mean = x.iter().sum::<f32>() / w as f32;
                            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / w as f32;
                            let inv = 1.0 / (var + EPS).sqrt();
                            for (((o, &x), &s), &c) in o.iter_mut().zip(x).zip(shift).zip(scale) {
                                *o = (x - mean) * inv * (1.0 + c) + s;
                            }
                        }
                    })
            })
        })
    })???;
    Tensor::from_vec(out, (b, n, w), &Device::Cpu)
}

/// `x + gate * y`: `x` and `y` `(b, n, w)`, `gate` `(b, 1, w)`.
pub fn gated_add(x: &Tensor, gate: &Tensor, y: &Tensor) -> Result<Tensor> {
    if !cpu_f32(&[x, gate, y]) {
        return x + gate.broadcast_mul(y)?;
    }
    let (x, gate, y) = (x.contiguous()?, gate.contiguous()?, y.contiguous()?);
    let (b, n, w) = x.dims3()?;
    if y.dims3()? != (b, n, w) {
        candle_core::bail!("gated_add: x {:?}, y {:?}", x.dims(), y.dims());
    }
    let mut out = vec![0f32; b * n * w];
    with_slice(&x, |xs| {
        with_slice(&gate, |gs| {
            with_slice(&y, |ys| {
                out.par_chunks_mut(ROWS * w)
                    .zip(xs.par_chunks(ROWS * w).zip(ys.par_chunks(ROWS * w)))
                    .enumerate()
                    .for_each(|(item, (out, (xs, ys)))| {
                        let rows = out
                            .chunks_exact_mut(w)
                            .zip(xs.chunks_exact(w).zip(ys.chunks_exact(w)));
                        for (r, (o, (x, y))) in rows.enumerate() {
                            let g = &gs[(item * ROWS + r) / n * w..][..w];
                            for (((o, &x), &y), &g) in o.iter_mut().zip(x).zip(y).zip(g) {
                                *o = x + g * y;
                            }
                        }
                    })
            })
        })
    })???;
    Tensor::from_vec(out, (b, n, w), &Device::Cpu)
}

/// GELU (tanh approximation) of every element.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if !cpu_f32(&[x]) {
        return x.gelu();
    }
    let x = x.contiguous()?;
    let mut out = vec![0f32; x.elem_count()];
    with_slice(&x, |xs| {
        out.par_chunks_mut(1 << 14)
            .zip(xs.par_chunks(1 << 14))
            .for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, &x)| *o = math::gelu(x)))
    })?;
    Tensor::from_vec(out, x.dims(), &Device::Cpu)
}

/// The rotary embedding's angles per token: cos and sin, `(b, n, head_dim / 2)` float32, from the tokens'
/// ids `(b, n, axes)`: axis `a` turns `axes_dim[a] / 2` pairs at `theta^(-2j / axes_dim[a])` per unit of id.
pub fn rope_tables(ids: &Tensor, axes_dim: &[usize], theta: f64) -> Result<(Tensor, Tensor)> {
    let ids = ids.to_dtype(candle_core::DType::F32)?.to_device(&Device::Cpu)?;
    let (b, n, axes) = ids.dims3()?;
    if axes != axes_dim.len() {
        candle_core::bail!("rope ids have {axes} axes, the model {}", axes_dim.len());
    }
    let freqs: Vec<(usize, f32)> = axes_dim
        .iter()
        .enumerate()
        .flat_map(|(a, &dim)| {
            (0..dim / 2).map(move |j| (a, (1.0 / theta.powf(2.0 * j as f64 / dim as f64)) as f32))
        })
        .collect();
    let ids = ids.flatten_all()?.to_vec1::<f32>()?;
    let half = freqs.len();
    let (mut cos, mut sin) = (Vec::with_capacity(b * n * half), Vec::with_capacity(b * n * half));
    for token in ids.chunks_exact(axes) {
        for &(a, f) in &freqs {
            let angle = token[a] * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    Ok((
        Tensor::from_vec(cos, (b, n, half), &Device::Cpu)?,
        Tensor::from_vec(sin, (b, n, half), &Device::Cpu)?,
    ))
}

/// The attention inputs of one or more streams: each stream's fused projection `(b, n_s, 3 * heads * d)`
/// (Q, K, V), QK-normed with its stream's scales, the rotary embedding turning pairs (2i, 2i+1) of Q and K
/// by the angles of `cos`/`sin` `(b, sum n_s, d / 2)`; the streams' tokens follow each other in the outputs
/// Q, K, V `(b, sum n_s, heads * d)`. The model's other tensors may live on any device; this runs on the CPU
/// for float32 CPU tensors and with Candle's ops otherwise.
pub fn qkv_rope(
    streams: &[(&Tensor, &Tensor, &Tensor)],
    heads: usize,
    cos: &Tensor,
    sin: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    const EPS: f32 = 1e-6;
    let all: Vec<&Tensor> = streams.iter().flat_map(|s| [s.0, s.1, s.2]).collect();
    if !cpu_f32(&all) || !cpu_f32(&[cos, sin]) {
        return qkv_rope_candle(streams, heads, cos, sin);
    }
    let b = streams.first().map_or(Ok(0), |s| s.0.dim(0))?;
    let total: usize = streams.iter().map(|s| s.0.dim(1)).sum::<Result<usize>>()?;
    let width3 = streams.first().map_or(Ok(0), |s| s.0.dim(2))?;
    let w = width3 / 3;
    let d = w / heads.max(1);
    let half = d / 2;
    if heads == 0 || w % heads != 0 || !d.is_multiple_of(2) || cos.dims3()? != (b, total, half) {
        candle_core::bail!(
            "qkv_rope: {width3} values per token, {heads} heads, tables {:?}",
            cos.dims()
        );
    }
    let (cos, sin) = (cos.contiguous()?, sin.contiguous()?);
    let mut q = vec![0f32; b * total * w];
    let mut k = vec![0f32; b * total * w];
    let mut v = vec![0f32; b * total * w];
    let mut offset = 0;
    for (qkv, q_norm, k_norm) in streams {
        let (qkv_b, n, qkv_w) = qkv.dims3()?;
        if qkv_b != b || qkv_w != width3 {
            candle_core::bail!("qkv_rope: a stream of shape {:?}", qkv.dims());
        }
        let (q_norm, k_norm) = (q_norm.to_vec1::<f32>()?, k_norm.to_vec1::<f32>()?);
        with_rows(qkv, |src, stride| {
            with_slice(&cos, |cs| {
                with_slice(&sin, |ss| {
                    let outs = q
                        .par_chunks_mut(w)
                        .zip(k.par_chunks_mut(w))
                        .zip(v.par_chunks_mut(w))
                        .enumerate()
                        .filter(|(row, _)| (row % total) >= offset && (row % total) < offset + n);
                    outs.for_each(|(row, ((q, k), v))| {
                        let (bi, t) = (row / total, row % total);
                        let s = &src[(bi * n + t - offset) * stride..][..width3];
                        let (c, sn) = (&cs[row * half..][..half], &ss[row * half..][..half]);
                        norm_rope(&s[..w], &q_norm, c, sn, d, EPS, q);
                        norm_rope(&s[w..2 * w], &k_norm, c, sn, d, EPS, k);
                        v.copy_from_slice(&s[2 * w..]);
                    })
                })
            })
        })???;
        offset += n;
    }
    let shape = (b, total, w);
    Ok((
        Tensor::from_vec(q, shape, &Device::Cpu)?,
        Tensor::from_vec(k, shape, &Device::Cpu)?,
        Tensor::from_vec(v, shape, &Device::Cpu)?,
    ))
}

/// RMSNorm of each head of `x` by `scale`, then the rotation of its pairs (2i, 2i+1), into `out`.
fn norm_rope(x: &[f32], scale: &[f32], cos: &[f32], sin: &[f32], d: usize, eps: f32, out: &mut [f32]) {
    for (head, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ms = head.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for (i, ((&c, &s), pair)) in cos.iter().zip(sin).zip(o.chunks_exact_mut(2)).enumerate() {
            let x0 = head[2 * i] * inv * scale[2 * i];
            let x1 = head[2 * i + 1] * inv * scale[2 * i + 1];
            pair[0] = c * x0 - s * x1;
            pair[1] = s * x0 + c * x1;
        }
    }
}

/// [`qkv_rope`] on Candle's ops (GPUs, other dtypes).
fn qkv_rope_candle(
    streams: &[(&Tensor, &Tensor, &Tensor)],
    heads: usize,
    cos: &Tensor,
    sin: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (mut qs, mut ks, mut vs) = (Vec::new(), Vec::new(), Vec::new());
    for (qkv, q_norm, k_norm) in streams {
        let (b, n, w3) = qkv.dims3()?;
        let w = w3 / 3;
        let d = w / heads;
        let qkv = qkv.reshape((b, n, 3, heads, d))?;
        let norm = |i: usize, scale: &Tensor| -> Result<Tensor> {
            candle_nn::ops::rms_norm(&qkv.narrow(2, i, 1)?.squeeze(2)?.contiguous()?, scale, 1e-6)
        };
        qs.push(norm(0, q_norm)?);
        ks.push(norm(1, k_norm)?);
        vs.push(qkv.narrow(2, 2, 1)?.squeeze(2)?.reshape((b, n, w))?);
    }
    let (q, k, v) = (Tensor::cat(&qs, 1)?, Tensor::cat(&ks, 1)?, Tensor::cat(&vs, 1)?);
    let (b, n, _, d) = q.dims4()?;
    let device = q.device().clone();
    let (cos, sin) = (
        cos.to_device(&device)?.to_dtype(q.dtype())?.unsqueeze(2)?,
        sin.to_device(&device)?.to_dtype(q.dtype())?.unsqueeze(2)?,
    );
    let turn = |x: &Tensor| -> Result<Tensor> {
        let x = x.reshape((b, n, heads, d / 2, 2))?;
        let (x0, x1) = (x.narrow(4, 0, 1)?.squeeze(4)?, x.narrow(4, 1, 1)?.squeeze(4)?);
        let out0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
        let out1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
        Tensor::stack(&[out0, out1], 4)?.reshape((b, n, heads * d))
    };
    Ok((turn(&q)?, turn(&k)?, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::{max_diff, random};

    #[test]
    fn modulated_norm_and_gated_add_match_candles_ops_over_batches() {
        let (x, y) = (random(&[2, 37, 48], 1), random(&[2, 37, 48], 2));
        let (shift, scale) = (random(&[2, 1, 48], 3), random(&[2, 1, 48], 4));
        let ones = Tensor::ones(48, candle_core::DType::F32, &Device::Cpu).unwrap();
        let zeros = Tensor::zeros(48, candle_core::DType::F32, &Device::Cpu).unwrap();
        let normed = candle_nn::ops::layer_norm_slow(&x, &ones, &zeros, 1e-6).unwrap();
        let expected = normed
            .broadcast_mul(&(&scale + 1.0).unwrap())
            .unwrap()
            .broadcast_add(&shift)
            .unwrap();
        assert!(max_diff(&modulated_norm(&x, &shift, &scale).unwrap(), &expected) < 1e-5);
        let expected = (&x + scale.broadcast_mul(&y).unwrap()).unwrap();
        assert!(max_diff(&gated_add(&x, &scale, &y).unwrap(), &expected) < 1e-6);
        assert!(max_diff(&gelu(&y).unwrap(), &y.gelu().unwrap()) < 1e-6);
    }

    #[test]
    fn qkv_rope_of_two_streams_matches_candles_ops() {
        let (heads, d) = (3, 8);
        let w = heads * d;
        let (txt, img) = (random(&[2, 5, 3 * w], 5), random(&[2, 11, 3 * w], 6));
        let norms: Vec<Tensor> = (0..4).map(|i| random(&[d], 10 + i)).collect();
        let ids = (random(&[2, 16, 3], 7) * 20.0).unwrap();
        let (cos, sin) = rope_tables(&ids, &[2, 2, 4], 10_000.0).unwrap();
        let streams = [(&txt, &norms[0], &norms[1]), (&img, &norms[2], &norms[3])];
        let ours = qkv_rope(&streams, heads, &cos, &sin).unwrap();
        let theirs = qkv_rope_candle(&streams, heads, &cos, &sin).unwrap();
        for (a, b) in [(&ours.0, &theirs.0), (&ours.1, &theirs.1), (&ours.2, &theirs.2)] {
            assert_eq!(a.dims(), &[2, 16, w]);
            assert!(max_diff(a, b) < 1e-5, "{}", max_diff(a, b));
        }
    }
}
