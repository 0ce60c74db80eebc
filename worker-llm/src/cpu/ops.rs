//! The transformer's small operations on f32 rows: normalisation, rotary embedding, attention over the
//! cache, the gated activation.

use super::SharedOut;

/// Scales `x` to unit root mean square and multiplies by `weight` (RMSNorm), into `out`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let mean_square = dot(x, x) / x.len() as f32;
    let scale = 1.0 / (mean_square + eps).sqrt();
    for ((o, x), w) in out.iter_mut().zip(x).zip(weight) {
        *o = x * scale * w;
    }
}

/// A dot product written so that the compiler vectorises it (eight independent sums).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `out += w * v`.
fn axpy(w: f32, v: &[f32], out: &mut [f32]) {
    for (o, v) in out.iter_mut().zip(v) {
        *o += w * v;
    }
}

/// `gate = silu(gate) * up`: the SwiGLU activation of Llama's MLP.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// The rotary embedding's angles, computed once per forward for all layers.
pub struct Rope {
    inv_freq: Vec<f64>,
}

impl Rope {
    /// `dims` rotated dimensions per head with base `theta`; `factors` divide the frequencies
    /// (GGUF `rope_freqs.weight`, Llama 3.1's long-context scaling).
    pub fn new(dims: usize, theta: f64, factors: Option<&[f32]>) -> Rope {
        let inv_freq = (0..dims / 2)
            .map(|i| {
                let f = theta.powf(-2.0 * i as f64 / dims as f64);
                f / factors.and_then(|fs| fs.get(i)).map_or(1.0, |&x| x as f64)
            })
            .collect();
        Rope { inv_freq }
    }

    /// Rotated pairs of dimensions per head.
    pub fn pairs(&self) -> usize {
        self.inv_freq.len()
    }

    /// (cos, sin) for each of `count` positions from `start`, flattened: `count * dims / 2` each.
    pub fn tables(&self, start: usize, count: usize) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let (mut cos, mut sin) = (Vec::with_capacity(count * half), Vec::with_capacity(count * half));
        for p in start..start + count {
            for f in &self.inv_freq {
                let (s, c) = (p as f64 * f).sin_cos();
                cos.push(c as f32);
                sin.push(s as f32);
            }
        }
        (cos, sin)
    }
}

/// Rotates each head of one position, pairing dimensions (2i, 2i+1) as GGML's "normal" rope does
/// (Llama GGUF files store Q and K permuted for it).
pub fn rope_interleaved(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    for head in x.chunks_exact_mut(head_dim) {
        for (i, (c, s)) in cos.iter().zip(sin).enumerate() {
            let (a, b) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = a * c - b * s;
            head[2 * i + 1] = a * s + b * c;
        }
    }
}

/// Shapes of one attention call.
#[derive(Clone, Copy)]
pub struct Heads {
    /// Query heads.
    pub q: usize,
    /// Key/value heads (fewer with grouped-query attention).
    pub kv: usize,
    /// Dimensions per head.
    pub dim: usize,
}

/// Causal attention of `m` new queries (at positions `start..start + m`) over the cached keys and
/// values of positions `0..start + m`. `q` rows are `q_stride` apart; the caches hold one row of
/// `kv * dim` per position; `out` gets `m` rows of `q * dim`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    q_stride: usize,
    m: usize,
    start: usize,
    keys: &[f32],
    values: &[f32],
    heads: Heads,
    out: &mut [f32],
) {
    let Heads { q: nq, kv: nkv, dim } = heads;
    let group = nq / nkv;
    let kv_width = nkv * dim;
    let scale = 1.0 / (dim as f32).sqrt();
    let out_ptr = SharedOut(out.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(m * nq, |items| {
        let out_ptr = &out_ptr;
        let mut scores = Vec::with_capacity(start + m);
        for item in items {
            let (i, h) = (item / nq, item % nq);
            let (qh, g) = (&q[i * q_stride + h * dim..][..dim], h / group);
            let visible = start + i + 1;
            scores.clear();
            scores.extend((0..visible).map(|j| dot(qh, &keys[j * kv_width + g * dim..][..dim]) * scale));
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0.0;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                total += *s;
            }
            // SAFETY: each (i, h) slice of `out` is written by the one item that owns it.
            let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.0.add((i * nq + h) * dim), dim) };
            o.fill(0.0);
            for (j, s) in scores.iter().enumerate() {
                axpy(s / total, &values[j * kv_width + g * dim..][..dim], o);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_of_one_query_weights_values_by_softmax_of_scores() {
        // One head of dim 2, two cached positions: scores q.k/sqrt(2) = [0, 2/sqrt(2)].
        let q = [1.0, 1.0];
        let keys = [0.0, 0.0, 1.0, 1.0];
        let values = [1.0, 0.0, 0.0, 1.0];
        let mut out = [0.0; 2];
        let heads = Heads { q: 1, kv: 1, dim: 2 };
        attention(&q, 2, 1, 1, &keys, &values, heads, &mut out);
        let s = (2.0f32 / 2f32.sqrt()).exp();
        assert!((out[0] - 1.0 / (1.0 + s)).abs() < 1e-6);
        assert!((out[1] - s / (1.0 + s)).abs() < 1e-6);
    }

    #[test]
    fn a_query_does_not_see_later_positions() {
        // Two new queries at positions 0 and 1: the first sees only value 0.
        let q = [1.0, 0.0, 1.0, 0.0];
        let keys = [1.0, 0.0, 1.0, 0.0];
        let values = [5.0, 5.0, -3.0, 1.0];
        let mut out = [0.0; 4];
        attention(
            &q,
            2,
            2,
            0,
            &keys,
            &values,
            Heads { q: 1, kv: 1, dim: 2 },
            &mut out,
        );
        assert_eq!(&out[..2], &[5.0, 5.0]);
        assert!((out[2] - 1.0).abs() < 1e-6 && (out[3] - 3.0).abs() < 1e-6);
    }

    #[test]
    fn rope_rotates_pairs_by_position_times_frequency() {
        let rope = Rope::new(4, 10000.0, None);
        let (cos, sin) = rope.tables(3, 1);
        let mut x = [1.0, 0.0, 1.0, 0.0];
        rope_interleaved(&mut x, 4, &cos, &sin);
        // Pair 0 turns by 3 rad, pair 1 by 3 * 10000^-0.5.
        assert!((x[0] - 3f32.cos()).abs() < 1e-6 && (x[1] - 3f32.sin()).abs() < 1e-6);
        let a = 3.0f32 * 0.01;
        assert!((x[2] - a.cos()).abs() < 1e-6 && (x[3] - a.sin()).abs() < 1e-6);
    }

    #[test]
    fn rms_norm_gives_unit_root_mean_square() {
        let mut out = [0.0; 4];
        rms_norm(&[2.0, -2.0, 2.0, -2.0], &[1.0, 1.0, 0.5, 1.0], 0.0, &mut out);
        assert_eq!(out, [1.0, -1.0, 0.5, -1.0]);
    }
}
