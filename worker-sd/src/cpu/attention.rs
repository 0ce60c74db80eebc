//! Scaled dot-product attention by blocks of queries: for each (image, head, block of query rows) the
//! block's scores against every key are computed, exponentiated and multiplied by the values, then each
//! output row is divided by its sum. The exact softmax of a row needs only that row, so at most one block
//! of scores per thread exists (at SD 1.5's 64x64 latents, 64 x 4096 floats instead of 4096 x 4096 per head).
//! Q, K and V are read where the projections wrote them, `(batch, tokens, heads * head_dim)`, and the
//! output is written in that layout too: no transposes to and from one-head-per-batch.

use candle_core::{Result, Tensor};

use super::math::exp_shifted;
use super::{SharedOut, for_items, gemm, with_scratch, with_slice};

/// Scores per block: rows of queries times keys, about 1 MiB of floats.
const BLOCK_SCORES: usize = 1 << 18;

/// `softmax(q k^T * scale) v` per head: `q` `(b, nq, heads * d)`, `k` and `v` `(b, nk, heads * d)`, float32
/// on the CPU; returns `(b, nq, heads * d)`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f32) -> Result<Tensor> {
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let (b, nq, width) = q.dims3()?;
    let (bk, nk, width_k) = k.dims3()?;
    if (bk, nk, width_k) != v.dims3()? || bk != b || width_k != width || heads == 0 || width % heads != 0 {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?} do not fit {heads} heads",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let d = width / heads;
    let rows = (BLOCK_SCORES / nk.max(1)).clamp(8, 512).min(nq.max(1));
    let blocks = nq.div_ceil(rows);
    let mut out = vec![0f32; b * nq * width];
    let dst = SharedOut(out.as_mut_ptr());
    with_slice(&q, |qs| {
        with_slice(&k, |ks| {
            with_slice(&v, |vs| {
                for_items(b * heads * blocks, |item, parallel_gemm| {
                    let (bi, h, block) = (item / (heads * blocks), item / blocks % heads, item % blocks);
                    let row0 = block * rows;
                    let m = rows.min(nq - row0);
                    let q0 = &qs[(bi * nq + row0) * width + h * d..];
                    let k0 = &ks[bi * nk * width + h * d..];
                    let v0 = &vs[bi * nk * width + h * d..];
                    let dst = &dst;
                    with_scratch(m * nk, |scores| {
                        // SAFETY: scores is m x nk; q0 holds m rows of d at stride width, k0 and v0 nk rows;
                        // the output rows (bi, row0..row0+m, head h) belong to this item only.
                        unsafe {
                            gemm(
                                (m, nk, d),
                                (scores.as_mut_ptr(), nk, 1),
                                (q0.as_ptr(), width, 1),
                                (k0.as_ptr(), 1, width),
                                false,
                                scale,
                                parallel_gemm,
                            );
                        }
                        let sums: Vec<f32> = scores.chunks_exact_mut(nk).map(exp_shifted).collect();
                        let o0 = (bi * nq + row0) * width + h * d;
                        // SAFETY: as above.
                        unsafe {
                            gemm(
                                (m, d, nk),
                                (dst.0.add(o0), width, 1),
                                (scores.as_ptr(), nk, 1),
                                (v0.as_ptr(), width, 1),
                                false,
                                1.0,
                                parallel_gemm,
                            );
                            for (r, sum) in sums.iter().enumerate() {
                                let row = std::slice::from_raw_parts_mut(dst.0.add(o0 + r * width), d);
                                let inv = 1.0 / sum;
                                row.iter_mut().for_each(|x| *x *= inv);
                            }
                        }
                    })
                })
            })
        })
    })???;
    Tensor::from_vec(out, (b, nq, width), q.device())
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

    #[test]
    fn matches_candle_for_self_and_cross_attention() {
        // (batch, queries, keys, heads, head dim): self-attention with several query blocks, cross
        // attention on 77 text tokens, one wide head as the VAE's.
        let cases = [
            (2, 300, 300, 4, 8),
            (2, 130, 77, 8, 5),
            (1, 64, 64, 1, 48),
            (1, 3000, 90, 2, 4),
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
