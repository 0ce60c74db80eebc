//! Scaled dot-product attention, flash-attention style: for each (image, head, block of query rows) the
//! keys and values are taken a block at a time; each block's scores are exponentiated against the rows'
//! running maximum (an online softmax: when a row's maximum grows, its running sum and output are scaled
//! down by the difference), multiplied by the block's values and added to the rows' output, which is
//! divided by the rows' sums at the end. Neither the score matrix nor a whole score row ever exists: at
//! most one block of scores per thread (256 x 512 floats, 512 KiB, in L2).
//! Q, K and V are read where the projections wrote them, `(batch, tokens, heads * head_dim)`, and the
//! output is written in that layout too: no transposes to and from one-head-per-batch.

use candle_core::{Result, Tensor};

use super::math::{exp, exp_minus, max_of};
use super::{SharedOut, for_items, gemm, with_scratch, with_slice};

/// Query rows per block: the GEMMs repack each block of keys and values once per block of queries, so
/// taller blocks pack less (256 rows: 15-30% faster than 64 on SD 1.5's 64x64 self-attention).
const QUERY_ROWS: usize = 256;
/// Keys per block: a block of scores (with the taller query blocks) stays in the core's L2.
const KEY_BLOCK: usize = 512;

/// `softmax(q k^T * scale) v` per head: `q` `(b, nq, heads * d)`, `k` and `v` `(b, nk, heads * d)`, float32
/// on the CPU; returns `(b, nq, heads * d)`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f32) -> Result<Tensor> {
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let (b, nq, width) = q.dims3()?;
    let (bk, nk, width_k) = k.dims3()?;
    if (bk, nk, width_k) != v.dims3()?
        || bk != b
        || width_k != width
        || heads == 0
        || width % heads != 0
        || nk == 0
    {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?} do not fit {heads} heads",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let d = width / heads;
    let rows = QUERY_ROWS.min(nq.max(1));
    let key_block = KEY_BLOCK.min(nk);
    let blocks = nq.div_ceil(rows);
    let mut out = vec![0f32; b * nq * width];
    let dst = SharedOut(out.as_mut_ptr());
    let (k, v) = (by_head(&k, heads)?, by_head(&v, heads)?);
    with_slice(&q, |qs| {
        with_slice(&k, |ks| {
            with_slice(&v, |vs| {
                for_items(b * heads * blocks, |item, parallel_gemm| {
                    let (bi, h, block) = (item / (heads * blocks), item / blocks % heads, item % blocks);
                    let row0 = block * rows;
                    let m = rows.min(nq - row0);
                    let dst = &dst;
                    let block = Block {
                        q: &qs[(bi * nq + row0) * width + h * d..],
                        k: &ks[(bi * heads + h) * nk * d..][..nk * d],
                        v: &vs[(bi * heads + h) * nk * d..][..nk * d],
                        m,
                        nk,
                        d,
                        width,
                        scale,
                        parallel_gemm,
                    };
                    with_scratch(m * key_block + m * d + 2 * m, |scratch| {
                        let (scores, rest) = scratch.split_at_mut(m * key_block);
                        let (acc, rest) = rest.split_at_mut(m * d);
                        let (maxes, sums) = rest.split_at_mut(m);
                        block.run(key_block, scores, acc, maxes, sums);
                        let o0 = (bi * nq + row0) * width + h * d;
                        for (r, (row, sum)) in acc.chunks_exact(d).zip(sums.iter()).enumerate() {
                            // SAFETY: the output rows (bi, row0..row0+m, head h) belong to this item only.
                            let out = unsafe { std::slice::from_raw_parts_mut(dst.0.add(o0 + r * width), d) };
                            let inv = 1.0 / sum;
                            out.iter_mut().zip(row).for_each(|(o, a)| *o = a * inv);
                        }
                    })
                })
            })
        })
    })???;
    Tensor::from_vec(out, (b, nq, width), q.device())
}

/// `(b, n, heads * d)` rearranged as `(b, heads, n, d)`: each head's keys (values) contiguous, so that the
/// GEMMs pack a block of them from a few pages rather than from one page per token (a 512-key block of
/// Flux's 3072-wide rows spans 6 MiB).
fn by_head(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, n, width) = x.dims3()?;
    if heads == 1 {
        return Ok(x.clone());
    }
    x.reshape((b, n, heads, width / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// One block of query rows of one head, against every key and value of that head.
struct Block<'a> {
    /// The rows' queries (row stride `width`), the head's keys and values (nk rows of d, contiguous).
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    m: usize,
    nk: usize,
    d: usize,
    width: usize,
    scale: f32,
    parallel_gemm: bool,
}

impl Block<'_> {
    /// Leaves in `acc` (m x d) the rows' unnormalised outputs and in `sums` their softmax denominators.
    fn run(
        &self,
        key_block: usize,
        scores: &mut [f32],
        acc: &mut [f32],
        maxes: &mut [f32],
        sums: &mut [f32],
    ) {
        let (m, d, width) = (self.m, self.d, self.width);
        maxes.fill(f32::NEG_INFINITY);
        sums.fill(0.0);
        for key0 in (0..self.nk).step_by(key_block) {
            let n = key_block.min(self.nk - key0);
            let scores = &mut scores[..m * n];
            // SAFETY: scores is m x n; q holds m rows of d at stride width, k and v nk rows from their start.
            unsafe {
                gemm(
                    (m, n, d),
                    (scores.as_mut_ptr(), n, 1),
                    (self.q.as_ptr(), width, 1),
                    (self.k[key0 * d..].as_ptr(), 1, d),
                    false,
                    self.scale,
                    self.parallel_gemm,
                );
            }
            for (r, row) in scores.chunks_exact_mut(n).enumerate() {
                let block_max = max_of(row);
                let max = maxes[r].max(block_max);
                let block_sum = exp_minus(row, max);
                if key0 > 0 && max > maxes[r] {
                    // The row's maximum grew: what was summed so far was relative to the old one.
                    let shrink = exp(maxes[r] - max);
                    sums[r] *= shrink;
                    acc[r * d..][..d].iter_mut().for_each(|a| *a *= shrink);
                }
                sums[r] += block_sum;
                maxes[r] = max;
            }
            // SAFETY: as above; acc is m x d, written whole by the first block.
            unsafe {
                gemm(
                    (m, d, n),
                    (acc.as_mut_ptr(), d, 1),
                    (scores.as_ptr(), n, 1),
                    (self.v[key0 * d..].as_ptr(), d, 1),
                    key0 > 0,
                    1.0,
                    self.parallel_gemm,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::{max_diff, random};

    /// Candle's attention as candle-transformers' `CrossAttention` computes it.
    fn candle(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f64) -> Tensor {
        let split = |x: &Tensor| {
            let (b, n, w) = x.dims3().unwrap();
            x.reshape((b, n, heads, w / heads))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (qh, kh, vh) = (split(q), split(k), split(v));
        let scores = (qh.matmul(&kh.t().unwrap()).unwrap() * scale).unwrap();
        let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        let (b, nq, w) = q.dims3().unwrap();
        probs
            .matmul(&vh)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, nq, w))
            .unwrap()
    }

    /// `cargo test -p worker-sd --lib --release cpu::attention -- --ignored --nocapture`: the times of the
    /// largest self-attentions of SD 1.5 (64x64 latents, guided batch of 2, 8 heads of 40), SDXL
    /// at 1024 px (10 heads of 64 at 64x64 latents, 20 at 32x32) and Flux at 512 px (24 heads of
    /// 128 over 1536 tokens): `scripts/bench/attention_vs_torch.py` times torch's on the same shapes.
    #[test]
    #[ignore = "a timing, not a check"]
    fn time_self_attention() {
        let shapes = [
            (2, 8, 4096, 40),
            (1, 24, 1536, 128),
            (2, 10, 4096, 64),
            (2, 20, 1024, 64),
        ];
        for (b, heads, n, d) in shapes {
            let q = random(&[b, n, heads * d], 1);
            let k = random(&[b, n, heads * d], 2);
            let v = random(&[b, n, heads * d], 3);
            let mut best = f64::MAX;
            for _ in 0..3 {
                let start = std::time::Instant::now();
                attention(&q, &k, &v, heads, 1.0 / (d as f32).sqrt()).unwrap();
                best = best.min(start.elapsed().as_secs_f64());
            }
            let flops = 4.0 * (b * heads * n * n * d) as f64;
            eprintln!(
                "({b}, {heads}, {n}, {d}): {best:.3} s  {:.0} GF/s",
                flops / best / 1e9
            );
        }
    }

    #[test]
    fn matches_candle_for_self_and_cross_attention() {
        // (batch, queries, keys, heads, head dim): self-attention with several query blocks, cross
        // attention on 77 text tokens, one wide head as the VAE's, keys in several blocks (each block's
        // maximum differs, so the online softmax rescales).
        let cases = [
            (2, 300, 300, 4, 8),
            (2, 130, 77, 8, 5),
            (1, 64, 64, 1, 48),
            (1, 3000, 90, 2, 4),
            (1, 70, 2500, 2, 16),
        ];
        for (i, &(b, nq, nk, heads, d)) in cases.iter().enumerate() {
            let q = random(&[b, nq, heads * d], i as u64);
            let k = (random(&[b, nk, heads * d], 10 + i as u64) * 3.0).unwrap();
            let v = random(&[b, nk, heads * d], 20 + i as u64);
            let scale = 1.0 / (d as f64).sqrt();
            let ours = attention(&q, &k, &v, heads, scale as f32).expect("the kernel runs");
            let diff = max_diff(&ours, &candle(&q, &k, &v, heads, scale));
            assert!(diff < 1e-5, "case {i}: max difference {diff}");
        }
    }

    #[test]
    fn mismatched_shapes_are_an_error() {
        let q = random(&[1, 4, 8], 1);
        let k = random(&[1, 5, 8], 2);
        let v = random(&[1, 6, 8], 3);
        assert!(attention(&q, &k, &v, 2, 1.0).is_err());
        assert!(attention(&q, &k, &k, 3, 1.0).is_err());
    }
}
