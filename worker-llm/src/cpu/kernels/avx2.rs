//! AVX2 kernels (with FMA and F16C), after ggml's: every x86-64 CPU of the last decade has them.

use std::arch::x86_64::*;

use half::f16;

use super::{Q41, Q80, Q81};

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_1_avx2(w: &[Q41], a: &[Q81]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    // Lane 1 accumulates m * s, Q4_1's offset times the activations' sum.
    let mut offsets = _mm_setzero_ps();
    let low = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    for (w, a) in w.iter().zip(a) {
        // [w.d, w.m, a.d, a.s] as f32 in one conversion; then [w.d * a.d, w.m * a.s, ..].
        let wdm = u32::from(w.d.to_bits()) | u32::from(w.m.to_bits()) << 16;
        let ads = u32::from(a.d.to_bits()) | u32::from(a.s.to_bits()) << 16;
        let scales = _mm_cvtph_ps(_mm_set_epi32(0, 0, ads as i32, wdm as i32));
        let products = _mm_mul_ps(scales, _mm_movehl_ps(scales, scales));
        offsets = _mm_add_ps(offsets, products);
        let scale = _mm256_broadcastss_ps(products);
        // 16 bytes of nibbles -> 32 bytes 0..15: low nibbles are elements 0..16, high ones 16..32.
        // SAFETY: `qs` is 16 bytes and `a.qs` 32; unaligned loads.
        let packed = unsafe { _mm_loadu_si128(w.qs.as_ptr() as *const __m128i) };
        let bytes = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
        let qw = _mm256_and_si256(bytes, low);
        let qa = unsafe { _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i) };
        // u8 x i8 pairs summed to i16 (no overflow: 15 * 127 * 2), then to i32, then to f32.
        let pairs = _mm256_maddubs_epi16(qw, qa);
        let sums = _mm256_madd_epi16(pairs, ones);
        acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), acc);
    }
    let half = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let quad = _mm_add_ps(half, _mm_movehl_ps(half, half));
    let one = _mm_add_ss(quad, _mm_movehdup_ps(quad));
    _mm_cvtss_f32(one) + _mm_cvtss_f32(_mm_movehdup_ps(offsets))
}

/// [`q4_1_avx2`] for four activation rows at once (each `w.len()` blocks long): each weight block is
/// unpacked once for the four, and their eight f16 scales are converted in one instruction.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_1_avx2_rows(w: &[Q41], a: [&[Q81]; 4]) -> [f32; 4] {
    let blocks = w.len();
    let a = a.map(|a| &a[..blocks]);
    let mut acc = [_mm256_setzero_ps(); 4];
    // Odd lanes accumulate m * s per row, Q4_1's offset times the activations' sum.
    let mut offsets = _mm256_setzero_ps();
    let low = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut products = [0f32; 8];
    for j in 0..blocks {
        let w = &w[j];
        let pair = |d: f16, s: f16| (u32::from(d.to_bits()) | u32::from(s.to_bits()) << 16) as i32;
        // [w.d, w.m] x 4 and [a0.d, a0.s, a1.d, a1.s, ..] -> [w.d * a0.d, w.m * a0.s, ..].
        let wv = _mm256_cvtph_ps(_mm_set1_epi32(pair(w.d, w.m)));
        let av = _mm256_cvtph_ps(_mm_set_epi32(
            pair(a[3][j].d, a[3][j].s),
            pair(a[2][j].d, a[2][j].s),
            pair(a[1][j].d, a[1][j].s),
            pair(a[0][j].d, a[0][j].s),
        ));
        let prod = _mm256_mul_ps(wv, av);
        offsets = _mm256_add_ps(offsets, prod);
        // SAFETY: `products` holds eight f32.
        unsafe { _mm256_storeu_ps(products.as_mut_ptr(), prod) };
        // SAFETY: `qs` is 16 bytes; unaligned load.
        let packed = unsafe { _mm_loadu_si128(w.qs.as_ptr() as *const __m128i) };
        let qw = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low);
        for r in 0..4 {
            // SAFETY: `a[r][j].qs` is 32 bytes; unaligned load.
            let qa = unsafe { _mm256_loadu_si256(a[r][j].qs.as_ptr() as *const __m256i) };
            let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(qw, qa), ones);
            let scale = _mm256_set1_ps(products[2 * r]);
            acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), acc[r]);
        }
    }
    let mut offs = [0f32; 8];
    // SAFETY: `offs` holds eight f32.
    unsafe { _mm256_storeu_ps(offs.as_mut_ptr(), offsets) };
    let mut out = [0f32; 4];
    for r in 0..4 {
        let half = _mm_add_ps(_mm256_castps256_ps128(acc[r]), _mm256_extractf128_ps(acc[r], 1));
        let quad = _mm_add_ps(half, _mm_movehl_ps(half, half));
        out[r] = _mm_cvtss_f32(_mm_add_ss(quad, _mm_movehdup_ps(quad))) + offs[2 * r + 1];
    }
    out
}

/// One Q8_0 weight row against four Q8_0 activation rows (each `w.len()` blocks long), as ggml's
/// `ggml_vec_dot_q8_0_q8_0` (|w| times the activations with w's signs, u8 x i8 products), each weight
/// block's absolute values computed once for the four.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_0_avx2_rows(w: &[Q80], a: [&[Q80]; 4]) -> [f32; 4] {
    let blocks = w.len();
    let a = a.map(|a| &a[..blocks]);
    let mut acc = [_mm256_setzero_ps(); 4];
    let ones = _mm256_set1_epi16(1);
    let mut products = [0f32; 8];
    for j in 0..blocks {
        let w = &w[j];
        let bits = |d: f16| i16::from_ne_bytes(d.to_bits().to_ne_bytes());
        let wv = _mm256_cvtph_ps(_mm_set1_epi16(bits(w.d)));
        let av = _mm256_cvtph_ps(_mm_set_epi16(
            0,
            0,
            0,
            0,
            bits(a[3][j].d),
            bits(a[2][j].d),
            bits(a[1][j].d),
            bits(a[0][j].d),
        ));
        // SAFETY: `products` holds eight f32.
        unsafe { _mm256_storeu_ps(products.as_mut_ptr(), _mm256_mul_ps(wv, av)) };
        // SAFETY: `qs` is 32 bytes; unaligned load.
        let qw = unsafe { _mm256_loadu_si256(w.qs.as_ptr() as *const __m256i) };
        let abs = _mm256_sign_epi8(qw, qw);
        for r in 0..4 {
            // SAFETY: `a[r][j].qs` is 32 bytes; unaligned load.
            let qa = unsafe { _mm256_loadu_si256(a[r][j].qs.as_ptr() as *const __m256i) };
            let signed = _mm256_sign_epi8(qa, qw);
            let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(abs, signed), ones);
            let scale = _mm256_set1_ps(products[r]);
            acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), acc[r]);
        }
    }
    let mut out = [0f32; 4];
    for r in 0..4 {
        let half = _mm_add_ps(_mm256_castps256_ps128(acc[r]), _mm256_extractf128_ps(acc[r], 1));
        let quad = _mm_add_ps(half, _mm_movehl_ps(half, half));
        out[r] = _mm_cvtss_f32(_mm_add_ss(quad, _mm_movehdup_ps(quad)));
    }
    out
}
