//! Elementwise functions written so the compiler vectorises them (no branches, no libm calls).

use candle_core::{Result, Tensor};

/// Inputs [`exp`] clamps to.
const EXP_MIN: f32 = -87.0;
const EXP_MAX: f32 = 88.0;
/// Adding then subtracting 1.5 * 2^23 rounds to the nearest integer without a branch.
const ROUND: f32 = 12_582_912.0;
/// ln 2 in two parts (Cody and Waite), so x - n ln 2 stays exact for the n of float32's range.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `e^x` within a few float32 ulps; inputs below -87 give about 1e-38 instead of 0, inputs above 88
/// saturate.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(EXP_MIN, EXP_MAX);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    // n as an integer, read from the shifted float's low mantissa bits: a float-to-int cast (`as i32`)
    // saturates, which the compiler does lane by lane in scalar code, and the loops around stop vectorising.
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let r = x - n * LN2_HI - n * LN2_LO; // in [-ln2/2, ln2/2]
    // e^r: Taylor series to the 7th power (error below 1e-8 on the interval).
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let scale = f32::from_bits((n_int.wrapping_add(127) as u32) << 23);
    p * scale
}

/// `x * sigmoid(x)`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// GELU by its tanh approximation, as Candle's `gelu`: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`,
/// with `tanh(y) = 1 - 2 / (e^(2y) + 1)`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
    let y = SQRT_TWO_OVER_PI * x * (1.0 + 0.044_715 * x * x);
    let tanh = 1.0 - 2.0 / (exp(2.0 * y) + 1.0);
    0.5 * x * (1.0 + tanh)
}

/// GEGLU of the UNet's feed-forward layers: the last dimension of `x` is `[hidden, gate]`; returns
/// `hidden * gelu(gate)`, one pass, split over the threads by rows.
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    use rayon::prelude::*;
    let x = x.contiguous()?;
    let mut dims = x.dims().to_vec();
    let width = dims.last().copied().unwrap_or(0);
    if width % 2 != 0 {
        candle_core::bail!("geglu: the last dimension ({width}) must be even");
    }
    let half = width / 2;
    let rows = x.elem_count() / width.max(1);
    let mut out = vec![0f32; rows * half];
    super::with_slice(&x, |xs| {
        out.par_chunks_mut(half.max(1) * 64)
            .zip(xs.par_chunks(width.max(1) * 64))
            .for_each(|(out, xs)| {
                for (o, row) in out.chunks_exact_mut(half).zip(xs.chunks_exact(width)) {
                    let (hidden, gate) = row.split_at(half);
                    for ((o, &h), &g) in o.iter_mut().zip(hidden).zip(gate) {
                        *o = h * gelu(g);
                    }
                }
            })
    })?;
    if let Some(last) = dims.last_mut() {
        *last = half;
    }
    Tensor::from_vec(out, dims, x.device())
}

/// Softmax of one row in place: the row then sums to 1.
pub fn softmax_in_place(row: &mut [f32]) {
    let inv = 1.0 / exp_shifted(row);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// The largest value of `row` (minus infinity when empty), in 16 lanes so that it vectorises (a fold
/// with `f32::max` runs one element at a time).
pub fn max_of(row: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if wide::available() {
        // SAFETY: AVX-512F is there.
        return unsafe { wide::max_of(row) };
    }
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = row.chunks_exact(16);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = if v > *lane { v } else { *lane };
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    lanes.iter().copied().fold(tail, f32::max)
}

/// Replaces each value by `e^(value - max of the row)` and returns their sum: a softmax left to divide.
pub fn exp_shifted(row: &mut [f32]) -> f32 {
    let max = max_of(row);
    exp_minus(row, max)
}

/// Replaces each value by `e^(value - max)` and returns their sum.
pub fn exp_minus(row: &mut [f32], max: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if wide::available() {
        // SAFETY: AVX-512F is there.
        return unsafe { wide::exp_minus(row, max) };
    }
    let mut lanes = [0.0f32; 16];
    let mut chunks = row.chunks_exact_mut(16);
    for chunk in &mut chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk.iter_mut()) {
            *v = exp(*v - max);
            *lane += *v;
        }
    }
    let mut sum = 0.0f32;
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        sum += *v;
    }
    sum + lanes.iter().sum::<f32>()
}

/// The softmax's two passes on 512-bit vectors. The compiler vectorises the loops above for this CPU, but
/// at 256 bits (LLVM's preference on Intel's AVX-512 parts, which Rust cannot change per function):
/// attention's softmax is a third of its time, so it is written out here.
#[cfg(target_arch = "x86_64")]
mod wide {
    use std::arch::x86_64::*;

    /// Whether the CPU has AVX-512F.
    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx512f")
    }

    /// Lanes `0..n` of 16 set.
    fn mask(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    /// [`super::exp`] of 16 lanes (the same steps, with fused multiply-adds).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp16(x: __m512) -> __m512 {
        use super::{EXP_MAX, EXP_MIN, LN2_HI, LN2_LO, ROUND};
        let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_MIN)), _mm512_set1_ps(EXP_MAX));
        let round = _mm512_set1_ps(ROUND);
        let shifted = _mm512_fmadd_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E), round);
        let n = _mm512_sub_ps(shifted, round);
        let n_int = _mm512_sub_epi32(_mm512_castps_si512(shifted), _mm512_castps_si512(round));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(1.0 / 5040.0);
        for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let scale = _mm512_slli_epi32::<23>(_mm512_add_epi32(n_int, _mm512_set1_epi32(127)));
        _mm512_mul_ps(p, _mm512_castsi512_ps(scale))
    }

    /// [`super::exp_minus`].
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_minus(row: &mut [f32], max: f32) -> f32 {
        let max = _mm512_set1_ps(max);
        let mut sum = _mm512_setzero_ps();
        let mut chunks = row.chunks_exact_mut(16);
        for c in &mut chunks {
            // SAFETY: 16 floats.
            let e = exp16(_mm512_sub_ps(unsafe { _mm512_loadu_ps(c.as_ptr()) }, max));
            unsafe { _mm512_storeu_ps(c.as_mut_ptr(), e) };
            sum = _mm512_add_ps(sum, e);
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let m = mask(tail.len());
            // SAFETY: the masked lanes are the tail's.
            let e = exp16(_mm512_sub_ps(
                unsafe { _mm512_maskz_loadu_ps(m, tail.as_ptr()) },
                max,
            ));
            unsafe { _mm512_mask_storeu_ps(tail.as_mut_ptr(), m, e) };
            sum = _mm512_mask_add_ps(sum, m, sum, e);
        }
        _mm512_reduce_add_ps(sum)
    }

    /// [`super::max_of`].
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn max_of(row: &[f32]) -> f32 {
        let mut best = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut chunks = row.chunks_exact(16);
        for c in &mut chunks {
            // SAFETY: 16 floats.
            best = _mm512_max_ps(best, unsafe { _mm512_loadu_ps(c.as_ptr()) });
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            // SAFETY: the masked lanes are the tail's.
            let t = unsafe { _mm512_maskz_loadu_ps(mask(tail.len()), tail.as_ptr()) };
            best = _mm512_mask_max_ps(best, mask(tail.len()), best, t);
        }
        _mm512_reduce_max_ps(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_the_standard_library_within_float_precision() {
        let mut worst = 0.0f64;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let (ours, std) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((ours - std) / std).abs());
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) >= 0.0);
    }

    #[test]
    fn geglu_matches_candles_gelu_times_the_hidden_half() {
        let x = (crate::cpu::testing::random(&[2, 70, 12], 3) * 4.0).unwrap();
        let parts = x.chunk(2, 2).unwrap();
        let want = (&parts[0] * parts[1].gelu().unwrap()).unwrap();
        let diff = crate::cpu::testing::max_diff(&geglu(&x).unwrap(), &want);
        assert!(diff < 1e-5, "max difference {diff}");
        assert!(geglu(&crate::cpu::testing::random(&[3, 5], 1)).is_err());
    }

    #[test]
    fn max_of_finds_the_largest_value_anywhere() {
        for len in [0usize, 1, 15, 16, 17, 40, 1000] {
            let row: Vec<f32> = (0..len).map(|i| ((i * 37 % 101) as f32).sin()).collect();
            let want = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max_of(&row), want, "length {len}");
        }
    }

    #[test]
    fn silu_and_softmax_match_their_definitions() {
        for x in [-20.0f32, -3.0, -0.5, 0.0, 0.7, 4.0, 30.0] {
            let want = x / (1.0 + (-x).exp());
            assert!((silu(x) - want).abs() <= 1e-6 * want.abs().max(1.0), "silu({x})");
        }
        let mut row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let total: f32 = row.iter().map(|v| (v - max).exp()).sum();
        let want: Vec<f32> = row.iter().map(|v| (v - max).exp() / total).collect();
        softmax_in_place(&mut row);
        for (a, b) in row.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
