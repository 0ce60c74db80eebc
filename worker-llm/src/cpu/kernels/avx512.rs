//! AVX-512 kernels with VNNI (`vpdpbusd`: u8 x i8 products summed by fours into i32 in one
//! instruction), four dot products at a time that share one side: the integer work of two GGML
//! blocks in one 512-bit register, the shared side's blocks loaded and unpacked once for four rows.
//! Intel since Ice Lake and AMD since Zen 4 have them.
//!
//! The f32 arithmetic is the AVX2 kernels' (ggml's) to the bit: per block, eight lanes of exact integer
//! sums times the block's scale added into eight lanes in block order, the offsets summed in block
//! order, the same final sum. Only that order keeps us as close to llama.cpp as the AVX2 kernels are:
//! activations are requantized at every layer, so a different rounding of a sum moves a quant by one
//! somewhere and the logits of SmolLM2 by up to 0.4 (tests/smollm2_llamacpp.rs).

// AVX-512 intrinsics are stable since Rust 1.89: worker-llm's `rust-version` says so.

use std::arch::x86_64::*;

use half::f16;

use super::{Q41, Q80, Q81};

/// Two f16 (low, high) as the bits of one i32, for a conversion of several pairs at once.
pub(super) fn pair(lo: f16, hi: f16) -> i32 {
    (u32::from(lo.to_bits()) | u32::from(hi.to_bits()) << 16) as i32
}

/// Two 32-byte blocks' quants side by side in one register.
#[target_feature(enable = "avx512f")]
unsafe fn load2x32(lo: &[i8; 32], hi: &[i8; 32]) -> __m512i {
    // SAFETY: both arrays are 32 bytes; unaligned loads.
    unsafe {
        _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256(lo.as_ptr() as *const __m256i)),
            _mm256_loadu_si256(hi.as_ptr() as *const __m256i),
            1,
        )
    }
}

/// Two Q4_1 blocks' 16 bytes of nibbles as 64 bytes 0..15 in element order: block 0's low nibbles
/// (elements 0..16), its high ones (16..32), then block 1's.
#[target_feature(enable = "avx512f,avx2")]
unsafe fn nibbles2(w0: &Q41, w1: &Q41) -> __m512i {
    // SAFETY: `qs` is 16 bytes; unaligned loads.
    let (p0, p1) = unsafe {
        (
            _mm_loadu_si128(w0.qs.as_ptr() as *const __m128i),
            _mm_loadu_si128(w1.qs.as_ptr() as *const __m128i),
        )
    };
    // [p0, p0, p1, p1], the copies shifted right by 4 bits, masked to the nibble.
    let both = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_broadcastsi128_si256(p0)),
        _mm256_broadcastsi128_si256(p1),
        1,
    );
    let shifted = _mm512_srlv_epi64(both, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0));
    _mm512_and_si512(shifted, _mm512_set1_epi8(0x0F))
}

/// Eight lanes of `x` summed as ggml's `hsum_float_8` sums them.
#[target_feature(enable = "avx2")]
pub(super) fn reduce256(v: __m256) -> f32 {
    let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let quad = _mm_add_ps(half, _mm_movehl_ps(half, half));
    _mm_cvtss_f32(_mm_add_ss(quad, _mm_movehdup_ps(quad)))
}

/// Two blocks' eight-lane f32 sums (`xy`, block 0 in the low half) added into `acc` in block order,
/// times each block's scale, as the AVX2 kernels add them one block at a time.
#[target_feature(enable = "avx512f,avx2,fma")]
fn add2(acc: __m256, xy: __m512, s0: f32, s1: f32) -> __m256 {
    let acc = _mm256_fmadd_ps(_mm256_set1_ps(s0), _mm512_castps512_ps256(xy), acc);
    _mm256_fmadd_ps(
        _mm256_set1_ps(s1),
        _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(xy), 1)),
        acc,
    )
}

/// Asks for the weights one group of rows ahead (`ahead` blocks past `w[j]`: the next weight row when
/// one row is shared, the next four otherwise) to be fetched into cache: decode streams every weight
/// from memory once per token, and the loads' misses, not the arithmetic, were the kernels' cost.
#[target_feature(enable = "sse")]
pub(super) fn prefetch<T>(w: &[T], j: usize, ahead: usize) {
    _mm_prefetch::<_MM_HINT_T0>(w.as_ptr().wrapping_add(j + ahead) as *const i8);
}

/// Four rows' pairs of f16 pairs (`[d, x]` of a step's two blocks) converted to f32 together.
#[target_feature(enable = "avx512f,f16c")]
fn scales(p: [[i32; 2]; 4]) -> __m512 {
    _mm512_cvtph_ps(_mm256_set_epi32(
        p[3][1], p[3][0], p[2][1], p[2][0], p[1][1], p[1][0], p[0][1], p[0][0],
    ))
}

/// Four dot products at once, `w[r] . a[r]` (each `blocks` long), where one side is the same for the
/// four: one weight row against four activation rows (a batch) when `SHARED_W`, else four weight rows
/// against one activation row (a single sequence); each equal to the bit to
/// [`super::avx2::q4_1_avx2`]'s.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn q4_1_x4<const SHARED_W: bool>(
    blocks: usize,
    w: [&[Q41]; 4],
    a: [&[Q81]; 4],
) -> [f32; 4] {
    let (w, a) = (w.map(|w| &w[..blocks]), a.map(|a| &a[..blocks]));
    let mut acc = [_mm256_setzero_ps(); 4];
    // Q4_1's offset times the activations' sum, per row, added block by block.
    let mut offsets = [0f32; 4];
    let mut products = [0f32; 16];
    let ahead = if SHARED_W { blocks } else { 4 * blocks };
    let mut j = 0;
    while j + 2 <= blocks {
        for w in if SHARED_W { &w[..1] } else { &w[..] } {
            prefetch(w, j, ahead);
        }
        // [r: w0.d a0.d, w0.m a0.s, w1.d a1.d, w1.m a1.s] for each pair r, as the scalar products.
        let wp = w.map(|w| [pair(w[j].d, w[j].m), pair(w[j + 1].d, w[j + 1].m)]);
        let ap = a.map(|a| [pair(a[j].d, a[j].s), pair(a[j + 1].d, a[j + 1].s)]);
        let (wp, ap) = if SHARED_W {
            ([wp[0]; 4], ap)
        } else {
            (wp, [ap[0]; 4])
        };
        // SAFETY: `products` holds sixteen f32.
        unsafe { _mm512_storeu_ps(products.as_mut_ptr(), _mm512_mul_ps(scales(wp), scales(ap))) };
        // SAFETY (all loads here): the blocks are in bounds.
        let shared = unsafe {
            if SHARED_W {
                nibbles2(&w[0][j], &w[0][j + 1])
            } else {
                load2x32(&a[0][j].qs, &a[0][j + 1].qs)
            }
        };
        for r in 0..4 {
            let (qw, qa) = unsafe {
                if SHARED_W {
                    (shared, load2x32(&a[r][j].qs, &a[r][j + 1].qs))
                } else {
                    (nibbles2(&w[r][j], &w[r][j + 1]), shared)
                }
            };
            let xy = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), qw, qa));
            let p = &products[4 * r..4 * r + 4];
            acc[r] = add2(acc[r], xy, p[0], p[2]);
            offsets[r] += p[1];
            offsets[r] += p[3];
        }
        j += 2;
    }
    let mut out = [0f32; 4];
    for r in 0..4 {
        if j < blocks {
            let (w, a) = (&w[r][j], &a[r][j]);
            // SAFETY: `qs` is 16 bytes and `a.qs` 32; unaligned loads.
            let (packed, qa) = unsafe {
                (
                    _mm_loadu_si128(w.qs.as_ptr() as *const __m128i),
                    _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i),
                )
            };
            let qw = _mm256_and_si256(
                _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
                _mm256_set1_epi8(0x0F),
            );
            let xy = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), qw, qa));
            let scale = w.d.to_f32() * a.d.to_f32();
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(scale), xy, acc[r]);
            offsets[r] += w.m.to_f32() * a.s.to_f32();
        }
        out[r] = reduce256(acc[r]) + offsets[r];
    }
    out
}

/// [`q4_1_x4`] for Q8_0 weights and activations (`|w|` times the activations with `w`'s signs, u8 x
/// i8, as ggml's `ggml_vec_dot_q8_0_q8_0`; quants are in -127..=127): each result equal to the bit to
/// the AVX2 kernel's and Candle's one-row AVX one.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn q8_0_x4<const SHARED_W: bool>(
    blocks: usize,
    w: [&[Q80]; 4],
    a: [&[Q80]; 4],
) -> [f32; 4] {
    let (w, a) = (w.map(|w| &w[..blocks]), a.map(|a| &a[..blocks]));
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut products = [0f32; 8];
    let pairs = |x: [&[Q80]; 4], j: usize| x.map(|x| pair(x[j].d, x[j + 1].d));
    let ahead = if SHARED_W { blocks } else { 4 * blocks };
    let mut j = 0;
    while j + 2 <= blocks {
        for w in if SHARED_W { &w[..1] } else { &w[..] } {
            prefetch(w, j, ahead);
        }
        // [r: w0.d a0.d, w1.d a1.d] for each pair r.
        let (wp, ap) = (pairs(w, j), pairs(a, j));
        let (wp, ap) = if SHARED_W {
            ([wp[0]; 4], ap)
        } else {
            (wp, [ap[0]; 4])
        };
        let wv = _mm256_cvtph_ps(_mm_set_epi32(wp[3], wp[2], wp[1], wp[0]));
        let av = _mm256_cvtph_ps(_mm_set_epi32(ap[3], ap[2], ap[1], ap[0]));
        // SAFETY: `products` holds eight f32.
        unsafe { _mm256_storeu_ps(products.as_mut_ptr(), _mm256_mul_ps(wv, av)) };
        // SAFETY (all loads here): the blocks are in bounds.
        let shared = unsafe {
            if SHARED_W {
                load2x32(&w[0][j].qs, &w[0][j + 1].qs)
            } else {
                load2x32(&a[0][j].qs, &a[0][j + 1].qs)
            }
        };
        let (negative, uw) = (_mm512_movepi8_mask(shared), _mm512_abs_epi8(shared));
        for r in 0..4 {
            let (uw, sa) = if SHARED_W {
                let qa = unsafe { load2x32(&a[r][j].qs, &a[r][j + 1].qs) };
                (uw, _mm512_mask_sub_epi8(qa, negative, _mm512_setzero_si512(), qa))
            } else {
                let qw = unsafe { load2x32(&w[r][j].qs, &w[r][j + 1].qs) };
                let negative = _mm512_movepi8_mask(qw);
                (
                    _mm512_abs_epi8(qw),
                    _mm512_mask_sub_epi8(shared, negative, _mm512_setzero_si512(), shared),
                )
            };
            let xy = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), uw, sa));
            acc[r] = add2(acc[r], xy, products[2 * r], products[2 * r + 1]);
        }
        j += 2;
    }
    let mut out = [0f32; 4];
    for r in 0..4 {
        if j < blocks {
            let (w, a) = (&w[r][j], &a[r][j]);
            // SAFETY: `qs` is 32 bytes; unaligned loads.
            let (qw, qa) = unsafe {
                (
                    _mm256_loadu_si256(w.qs.as_ptr() as *const __m256i),
                    _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i),
                )
            };
            let sums = _mm256_dpbusd_epi32(
                _mm256_setzero_si256(),
                _mm256_sign_epi8(qw, qw),
                _mm256_sign_epi8(qa, qw),
            );
            let scale = w.d.to_f32() * a.d.to_f32();
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(sums), acc[r]);
        }
        out[r] = reduce256(acc[r]);
    }
    out
}

/// ggml's `quantize_row_q8_1` as [`super::quantize_q8_1_scalar`] does it (round half away from zero,
/// `s` rounded once), a block of 32 in two registers: equal to it to the bit (a maximum, an exact
/// fraction and an integer sum do not depend on the order).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn quantize_q8_1(x: &[f32], out: &mut [Q81]) {
    for (block, xs) in out.iter_mut().zip(x.chunks_exact(32)) {
        // SAFETY: `xs` holds 32 f32; unaligned loads.
        let (lo, hi) = unsafe { (_mm512_loadu_ps(xs.as_ptr()), _mm512_loadu_ps(xs.as_ptr().add(16))) };
        let d = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi))) / 127.0;
        let id = _mm512_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
        let round = |v: __m512| {
            let v = _mm512_mul_ps(v, id);
            // trunc(v), plus v's sign where the (exact) fraction is at least a half.
            let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
            let away =
                _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_abs_ps(_mm512_sub_ps(v, t)), _mm512_set1_ps(0.5));
            let sign = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(i32::MIN));
            let one = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(_mm512_set1_ps(1.0)), sign));
            _mm512_cvttps_epi32(_mm512_mask_add_ps(t, away, t, one))
        };
        let (qlo, qhi) = (round(lo), round(hi));
        let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qlo, qhi));
        // SAFETY: `qs` is 32 bytes; unaligned stores.
        unsafe {
            _mm_storeu_si128(block.qs.as_mut_ptr() as *mut __m128i, _mm512_cvtepi32_epi8(qlo));
            _mm_storeu_si128(
                block.qs[16..].as_mut_ptr() as *mut __m128i,
                _mm512_cvtepi32_epi8(qhi),
            );
        }
        block.d = f16::from_f32(d);
        block.s = f16::from_f32(sum as f32 * d);
    }
}
