//! The transformer's small operations on f32 rows: normalisation, rotary embedding, attention over the
//! cache, the gated activation.

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::{SharedOut, pool};
use crate::batch::kv_cache::BLOCK_TOKENS;

/// Scales `x` to unit root mean square and multiplies by `weight` (RMSNorm), into `out`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let mean_square = dot(x, x) / x.len() as f32;
    let scale = 1.0 / (mean_square + eps).sqrt();
    for ((o, x), w) in out.iter_mut().zip(x).zip(weight) {
        *o = x * scale * w;
    }
}

/// Normalises `x` to zero mean and unit variance, then scales by `weight` and adds `bias` (LayerNorm).
pub fn layer_norm(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let scale = 1.0 / (var + eps).sqrt();
    for (((o, x), w), b) in out.iter_mut().zip(x).zip(weight).zip(bias) {
        *o = (x - mean) * scale * w + b;
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

/// GELU with the tanh approximation.
fn gelu_tanh_one(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
}

/// `gate = gelu(gate) * up`, GELU with the tanh approximation: the GeGLU of Gemma's MLP.
pub fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = gelu_tanh_one(*g) * u;
    }
}

/// `x = gelu(x)` with the tanh approximation (Phi-2's plain MLP).
pub fn gelu_tanh(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = gelu_tanh_one(*v));
}

/// `x = silu(x)` (a plain SiLU MLP).
pub fn silu(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v /= 1.0 + (-*v).exp());
}

/// The rotary embedding's angles, computed once per forward for all layers.
pub struct Rope {
    inv_freq: Vec<f64>,
    /// Multiplies cos and sin (YaRN's and LongRoPE's attention factor; 1 otherwise).
    mscale: f64,
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
        Rope {
            inv_freq,
            mscale: 1.0,
        }
    }

    /// Given frequencies (a scaled rope: YaRN, LongRoPE), with cos and sin multiplied by `mscale`.
    pub fn from_inv_freq(inv_freq: Vec<f64>, mscale: f64) -> Rope {
        Rope { inv_freq, mscale }
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
                cos.push((c * self.mscale) as f32);
                sin.push((s * self.mscale) as f32);
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

/// Rotates one head, pairing dimension i with i + d/2 (GPT-NeoX's rope, as Qwen, Gemma and Phi-3 use);
/// `x` is the rotated part of the head (`2 * cos.len()` values).
pub fn rope_neox(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    let (lo, hi) = x.split_at_mut(half);
    for (i, (c, s)) in cos.iter().zip(sin).enumerate() {
        let (a, b) = (lo[i], hi[i]);
        lo[i] = a * c - b * s;
        hi[i] = a * s + b * c;
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

/// Where one query row of a batch sits: its sequence's block table and its position.
#[derive(Clone, Copy)]
pub struct RowPos<'a> {
    /// The sequence's blocks (see [`crate::batch::kv_cache`]).
    pub blocks: &'a [usize],
    /// The row's position: it attends to positions `0..=pos` of its sequence.
    pub pos: usize,
}

/// Offset of position `pos`'s row in a layer's paged cache.
pub fn cache_row(blocks: &[usize], pos: usize, kv_width: usize) -> usize {
    (blocks[pos / BLOCK_TOKENS] * BLOCK_TOKENS + pos % BLOCK_TOKENS) * kv_width
}

/// Cached positions ahead of the one read that [`paged_attention`] asks the CPU to fetch: a step reads
/// every sequence's keys and values from memory once, in blocks scattered over the pool, where the
/// hardware prefetcher does not follow (the f16 loads were most of the attention's time at 8 clients).
const AHEAD: usize = 6;

/// Asks for `x[at..at + len]` to be fetched into cache (nothing off x86-64).
#[inline]
fn prefetch(x: &[f16], at: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = x.as_ptr().wrapping_add(at) as *const i8;
        let bytes = 2 * len;
        for offset in (0..bytes)
            .step_by(64)
            .chain(std::iter::once(bytes.saturating_sub(1)))
        {
            // SAFETY: SSE is part of x86-64; a prefetch reads nothing and never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, at, len);
}

/// How one attention call turns query-key products into weights.
#[derive(Clone, Copy)]
pub struct Scores {
    /// Multiplies each product (1/sqrt(head_dim) for most models).
    pub scale: f32,
    /// `cap * tanh(score / cap)` after scaling (Gemma 2's attention soft-capping).
    pub softcap: Option<f32>,
    /// A row sees only its own position and the `window - 1` before it (sliding-window layers).
    pub window: Option<usize>,
}

impl Scores {
    /// Plain causal attention: 1/sqrt(`head_dim`), no cap, no window.
    pub fn causal(head_dim: usize) -> Scores {
        Scores {
            scale: 1.0 / (head_dim as f32).sqrt(),
            softcap: None,
            window: None,
        }
    }
}

/// Causal attention of a batch's query rows over their sequences' paged f16 caches (one row of
/// `kv * dim` per position, see [`cache_row`]), keys and values of every row's position already
/// written. `q` rows are `q_stride` apart; `out` gets one row of `q * dim` per query row. Work items are
/// (row, key/value head): each key and value is converted once for the query heads of its group.
///
/// Queries and attention weights meet the f16 cache in f16, as in ggml's CPU attention (its products
/// convert the f32 side to the f16 side's type): the cache already holds keys and values to that
/// precision, and the logits are then llama.cpp's to 1e-4 (tests/tiny_gguf_llamacpp.rs), not 2% apart on
/// random models that amplify every rounding.
#[allow(clippy::too_many_arguments)]
pub fn paged_attention(
    q: &[f32],
    q_stride: usize,
    rows: &[RowPos],
    keys: &[f16],
    values: &[f16],
    heads: Heads,
    how: Scores,
    out: &mut [f32],
) {
    let Heads { q: nq, kv: nkv, dim } = heads;
    let Scores {
        scale,
        softcap,
        window,
    } = how;
    let group = nq / nkv;
    let kv_width = nkv * dim;
    let out_ptr = SharedOut(out.as_mut_ptr());
    pool().execute_chunked(rows.len() * nkv, |items| {
        let out_ptr = &out_ptr;
        let mut scores: Vec<f32> = Vec::new();
        let mut kv_row = vec![0f32; dim];
        let mut q_half = vec![0f32; group * dim];
        for item in items {
            let (i, g) = (item / nkv, item % nkv);
            let RowPos { blocks, pos } = rows[i];
            let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
            let visible = pos + 1 - first;
            scores.clear();
            scores.resize(group * visible, 0.0);
            let qs = &q[i * q_stride + g * group * dim..][..group * dim];
            for (h, q) in q_half.iter_mut().zip(qs) {
                *h = f16::from_f32(*q).to_f32();
            }
            for j in 0..visible {
                if j + AHEAD < visible {
                    prefetch(
                        keys,
                        cache_row(blocks, first + j + AHEAD, kv_width) + g * dim,
                        dim,
                    );
                }
                let at = cache_row(blocks, first + j, kv_width) + g * dim;
                keys[at..at + dim].convert_to_f32_slice(&mut kv_row);
                for (h, qh) in q_half.chunks_exact(dim).enumerate() {
                    scores[h * visible + j] = dot(qh, &kv_row) * scale;
                }
            }
            if let Some(cap) = softcap {
                scores.iter_mut().for_each(|s| *s = cap * (*s / cap).tanh());
            }
            for s in scores.chunks_exact_mut(visible) {
                let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut total = 0.0;
                for x in s.iter_mut() {
                    *x = (*x - max).exp();
                    total += *x;
                }
                for x in s.iter_mut() {
                    *x = f16::from_f32(*x / total).to_f32();
                }
            }
            // SAFETY: the heads of group g of row i are written by the one item that owns them.
            let o = unsafe {
                std::slice::from_raw_parts_mut(out_ptr.0.add((i * nq + g * group) * dim), group * dim)
            };
            o.fill(0.0);
            for j in 0..visible {
                if j + AHEAD < visible {
                    prefetch(
                        values,
                        cache_row(blocks, first + j + AHEAD, kv_width) + g * dim,
                        dim,
                    );
                }
                let at = cache_row(blocks, first + j, kv_width) + g * dim;
                values[at..at + dim].convert_to_f32_slice(&mut kv_row);
                for (h, oh) in o.chunks_exact_mut(dim).enumerate() {
                    axpy(scores[h * visible + j], &kv_row, oh);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16s(x: &[f32]) -> Vec<f16> {
        x.iter().map(|&v| f16::from_f32(v)).collect()
    }

    #[test]
    fn attention_of_one_query_weights_values_by_softmax_of_scores() {
        // One head of dim 2, two cached positions in block 1 of the pool: scores q.k/sqrt(2) = [0, 2/sqrt(2)].
        let q = [1.0, 1.0];
        let mut keys = vec![0.0; 2 * BLOCK_TOKENS * 2];
        let mut values = keys.clone();
        let at = BLOCK_TOKENS * 2;
        keys[at..at + 4].copy_from_slice(&[0.0, 0.0, 1.0, 1.0]);
        values[at..at + 4].copy_from_slice(&[1.0, 0.0, 0.0, 1.0]);
        let mut out = [0.0; 2];
        let heads = Heads { q: 1, kv: 1, dim: 2 };
        let rows = [RowPos { blocks: &[1], pos: 1 }];
        paged_attention(
            &q,
            2,
            &rows,
            &f16s(&keys),
            &f16s(&values),
            heads,
            Scores::causal(heads.dim),
            &mut out,
        );
        let s = (2.0f32 / 2f32.sqrt()).exp();
        assert!((out[0] - 1.0 / (1.0 + s)).abs() < 1e-3);
        assert!((out[1] - s / (1.0 + s)).abs() < 1e-3);
    }

    #[test]
    fn a_query_sees_its_own_sequence_up_to_its_position_across_blocks() {
        // Two heads sharing one key/value head; the sequence's blocks are [2, 0]: position 16 lives
        // at the start of block 0. The row at position 16 sees 17 positions; only position 16 has a
        // key that matches, so it gets position 16's value.
        let (dim, kv_width) = (2, 2);
        let mut keys = vec![0.0; 3 * BLOCK_TOKENS * kv_width];
        let mut values = keys.clone();
        let blocks = [2usize, 0];
        for pos in 0..=16 {
            let at = cache_row(&blocks, pos, kv_width);
            values[at..at + 2].copy_from_slice(&[pos as f32, 1.0]);
        }
        let at = cache_row(&blocks, 16, kv_width);
        keys[at..at + 2].copy_from_slice(&[100.0, 0.0]);
        let q = [1.0, 0.0, 1.0, 0.0];
        let mut out = [0.0; 4];
        let rows = [RowPos {
            blocks: &blocks,
            pos: 16,
        }];
        let heads = Heads { q: 2, kv: 1, dim };
        paged_attention(
            &q,
            4,
            &rows,
            &f16s(&keys),
            &f16s(&values),
            heads,
            Scores::causal(heads.dim),
            &mut out,
        );
        for h in out.chunks_exact(2) {
            assert!((h[0] - 16.0).abs() < 1e-2 && (h[1] - 1.0).abs() < 1e-3, "{out:?}");
        }
        // At position 15 the matching key is not visible yet: the mean of values 0..=15.
        let rows = [RowPos {
            blocks: &blocks,
            pos: 15,
        }];
        paged_attention(
            &q,
            4,
            &rows,
            &f16s(&keys),
            &f16s(&values),
            heads,
            Scores::causal(heads.dim),
            &mut out,
        );
        assert!((out[0] - 7.5).abs() < 1e-2, "{out:?}");
        // A window of 4 at position 15 sees positions 12..=15 only: the mean of their values.
        paged_attention(
            &q,
            4,
            &rows,
            &f16s(&keys),
            &f16s(&values),
            heads,
            Scores {
                window: Some(4),
                ..Scores::causal(heads.dim)
            },
            &mut out,
        );
        assert!((out[0] - 13.5).abs() < 1e-2, "{out:?}");
    }

    #[test]
    fn neox_rope_pairs_each_dimension_with_the_one_half_a_head_away() {
        let rope = Rope::new(4, 10000.0, None);
        let (cos, sin) = rope.tables(3, 1);
        let mut x = [1.0, 1.0, 0.0, 0.0];
        rope_neox(&mut x, &cos, &sin);
        // Pair (0, 2) turns by 3 rad, pair (1, 3) by 3 * 10000^-0.5.
        let a = 3.0f32 * 0.01;
        assert!((x[0] - 3f32.cos()).abs() < 1e-6 && (x[2] - 3f32.sin()).abs() < 1e-6);
        assert!((x[1] - a.cos()).abs() < 1e-6 && (x[3] - a.sin()).abs() < 1e-6);
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
