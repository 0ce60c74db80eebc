//! Dot products of one quantized weight row with one quantized activation row.
//!
//! Candle's kernels serve every GGML type; this file adds SIMD ones where Candle has only a scalar
//! loop. Q4_1 (the type of SmolLM2's and many small models' GGUF files) is one: its scalar dot made
//! decode 0.63x llama.cpp. The AVX2 kernel follows ggml's `ggml_vec_dot_q4_1_q8_1`.

use candle_core::quantized::k_quants::{BlockQ4_1, BlockQ8_1, GgmlType};
use half::f16;

/// A GGML block type with the fastest dot product this build has for it.
pub trait Kernel: GgmlType + 'static {
    /// `n` weights of one row against one activation row, both quantized.
    fn dot(n: usize, w: &[Self], a: &[Self::VecDotType]) -> f32 {
        Self::vec_dot(n, w, a)
    }

    /// `out[i]` = one weight row against activation row `i` of `a` (rows of `n / BLCK_SIZE` blocks): a
    /// batch's rows, so that a kernel may unpack each weight block once for all of them.
    fn dot_rows(n: usize, w: &[Self], a: &[Self::VecDotType], out: &mut [f32]) {
        one_by_one(n, w, a, out)
    }

    /// Quantizes one activation row for [`Kernel::dot`], as ggml does for this type.
    fn quantize_activations(x: &[f32], out: &mut [Self::VecDotType]) {
        Self::VecDotType::from_float(x, out)
    }
}

macro_rules! candle_kernels {
    ($($t:ty),* $(,)?) => { $(impl Kernel for $t {})* };
}

use candle_core::quantized::k_quants as kq;
candle_kernels!(
    kq::BlockQ4_0,
    kq::BlockQ5_0,
    kq::BlockQ2K,
    kq::BlockQ3K,
    kq::BlockQ4K,
    kq::BlockQ5K,
    kq::BlockQ6K,
    kq::BlockQ8K,
    f32,
    f16,
);

/// `BlockQ4_1`'s layout (`#[repr(C)]` in Candle, fields private to it), to read its fields.
#[repr(C)]
struct Q41 {
    d: f16,
    m: f16,
    qs: [u8; 16],
}

/// `BlockQ8_1`'s layout: `s` is `d` times the sum of `qs`, which carries Q4_1's offset `m`.
#[repr(C)]
struct Q81 {
    d: f16,
    s: f16,
    qs: [i8; 32],
}

/// `BlockQ8_0`'s layout, the type of most GGUF files' token embeddings (and so of tied output heads).
#[repr(C)]
struct Q80 {
    d: f16,
    qs: [i8; 32],
}

const _: () = assert!(std::mem::size_of::<Q80>() == std::mem::size_of::<kq::BlockQ8_0>());
const _: () = assert!(std::mem::align_of::<Q80>() == std::mem::align_of::<kq::BlockQ8_0>());
const _: () = assert!(std::mem::size_of::<Q41>() == std::mem::size_of::<BlockQ4_1>());
const _: () = assert!(std::mem::align_of::<Q41>() == std::mem::align_of::<BlockQ4_1>());
const _: () = assert!(std::mem::size_of::<Q81>() == std::mem::size_of::<BlockQ8_1>());
const _: () = assert!(std::mem::align_of::<Q81>() == std::mem::align_of::<BlockQ8_1>());

/// Whether this CPU has the features the AVX2 kernels below are compiled for.
fn has_avx2_fma_f16c() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// A slice of blocks seen as its field-for-field copy.
///
/// # Safety
/// `U` must have `T`'s size and alignment, and every bit pattern of `T` must be a valid `U`.
unsafe fn view<T, U>(s: &[T]) -> &[U] {
    // SAFETY: the caller's promise.
    unsafe { std::slice::from_raw_parts(s.as_ptr() as *const U, s.len()) }
}

/// [`Kernel::dot_rows`] one activation row at a time.
fn one_by_one<T: Kernel>(n: usize, w: &[T], a: &[T::VecDotType], out: &mut [f32]) {
    for (o, a) in out.iter_mut().zip(a.chunks_exact(n / T::BLCK_SIZE)) {
        *o = T::dot(n, w, a);
    }
}

/// `out[i]` from activation row `i` of `a` (rows of `blocks` blocks): `four` rows at a time, `one` for
/// the last fewer than four.
fn by_fours<A>(
    blocks: usize,
    a: &[A],
    out: &mut [f32],
    four: impl Fn([&[A]; 4]) -> [f32; 4],
    one: impl Fn(&[A]) -> f32,
) {
    let full = out.len() / 4 * 4;
    let (fours, rest) = out.split_at_mut(full);
    let mut rows = a.chunks_exact(blocks);
    for o in fours.chunks_exact_mut(4) {
        let rows = [(); 4].map(|_| rows.next().expect("the caller checked a row per output"));
        o.copy_from_slice(&four(rows));
    }
    for (o, row) in rest.iter_mut().zip(rows) {
        *o = one(row);
    }
}

/// ggml's `quantize_row_q8_1`, the activations of Q4_1 and Q5_1 weights. Candle's `from_float` rounds
/// the block sum `s` twice (`f16(sum) * f16(d)`, losing up to 2 in `sum` past 2048), where ggml rounds
/// `sum * d` once with `d` in f32; the weights' offset `m` multiplies that error into every product, which
/// sharp attention then amplifies (2% of the logits of tests/tiny_gguf_llamacpp.rs's models).
fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    // SAFETY: Q81 is a field-for-field copy of Candle's #[repr(C)] block (size and alignment asserted
    // above), and every bit pattern is a valid value of its fields.
    let blocks = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut Q81, out.len()) };
    for (block, xs) in blocks.iter_mut().zip(x.chunks_exact(32)) {
        let d = xs.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, x) in block.qs.iter_mut().zip(xs) {
            *q = (x * id).round() as i8;
            sum += i32::from(*q);
        }
        block.d = f16::from_f32(d);
        block.s = f16::from_f32(sum as f32 * d);
    }
}

impl Kernel for kq::BlockQ5_1 {
    fn quantize_activations(x: &[f32], out: &mut [BlockQ8_1]) {
        quantize_q8_1(x, out)
    }
}

impl Kernel for kq::BlockQ8_0 {
    fn dot_rows(n: usize, w: &[Self], a: &[kq::BlockQ8_0], out: &mut [f32]) {
        let blocks = n / 32;
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma_f16c() && w.len() >= blocks && a.len() >= out.len() * blocks {
            // SAFETY: Q80 is a field-for-field copy of Candle's #[repr(C)] block (size and alignment
            // asserted above), and every bit pattern is a valid value of its fields.
            let w80 = unsafe { view::<_, Q80>(&w[..blocks]) };
            by_fours(
                blocks,
                a,
                out,
                // SAFETY: as above; the CPU has the features the kernel is compiled for.
                |four| unsafe { q8_0_avx2_rows(w80, four.map(|r| view(r))) },
                // Fewer than four rows (a single sequence's decode): Candle's one-row AVX kernel.
                |row| Self::dot(n, w, row),
            );
            return;
        }
        one_by_one(n, w, a, out)
    }
}

impl Kernel for BlockQ4_1 {
    fn quantize_activations(x: &[f32], out: &mut [BlockQ8_1]) {
        quantize_q8_1(x, out)
    }

    fn dot(n: usize, w: &[Self], a: &[BlockQ8_1]) -> f32 {
        let blocks = n / 32;
        // SAFETY: Q41 and Q81 are field-for-field copies of Candle's #[repr(C)] blocks (sizes and
        // alignments asserted above), and every bit pattern is a valid value of their fields.
        let (w, a) = unsafe {
            (
                std::slice::from_raw_parts(w.as_ptr() as *const Q41, w.len().min(blocks)),
                std::slice::from_raw_parts(a.as_ptr() as *const Q81, a.len().min(blocks)),
            )
        };
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma_f16c() {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { q4_1_avx2(w, a) };
        }
        q4_1_scalar(w, a)
    }

    fn dot_rows(n: usize, w: &[Self], a: &[BlockQ8_1], out: &mut [f32]) {
        let blocks = n / 32;
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma_f16c() && w.len() >= blocks && a.len() >= out.len() * blocks {
            // SAFETY: as in `dot`.
            let w41 = unsafe { view::<_, Q41>(&w[..blocks]) };
            by_fours(
                blocks,
                a,
                out,
                // SAFETY: as above; the CPU has the features the kernels are compiled for.
                |four| unsafe { q4_1_avx2_rows(w41, four.map(|r| view(r))) },
                // SAFETY: as above.
                |row| unsafe { q4_1_avx2(w41, view(row)) },
            );
            return;
        }
        one_by_one(n, w, a, out)
    }
}

fn q4_1_scalar(w: &[Q41], a: &[Q81]) -> f32 {
    w.iter()
        .zip(a)
        .map(|(w, a)| {
            let sum: i32 = (0..16)
                .map(|j| {
                    let lo = (w.qs[j] & 0x0F) as i32;
                    let hi = (w.qs[j] >> 4) as i32;
                    lo * a.qs[j] as i32 + hi * a.qs[j + 16] as i32
                })
                .sum();
            sum as f32 * w.d.to_f32() * a.d.to_f32() + w.m.to_f32() * a.s.to_f32()
        })
        .sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1_avx2(w: &[Q41], a: &[Q81]) -> f32 {
    use std::arch::x86_64::*;
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
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1_avx2_rows(w: &[Q41], a: [&[Q81]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
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
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_avx2_rows(w: &[Q80], a: [&[Q80]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_row(rng: &mut impl Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
    }

    #[test]
    fn q4_1_kernel_matches_candles_reference_dot() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for n in [64, 576, 1536] {
            let mut w = vec![BlockQ4_1::zeros(); n / 32];
            let mut a = vec![BlockQ8_1::zeros(); n / 32];
            BlockQ4_1::from_float(&random_row(&mut rng, n), &mut w);
            BlockQ8_1::from_float(&random_row(&mut rng, n), &mut a);
            let ours = <BlockQ4_1 as Kernel>::dot(n, &w, &a);
            let candle = BlockQ4_1::vec_dot_unopt(n, &w, &a);
            assert!(
                (ours - candle).abs() <= 1e-4 * candle.abs().max(1.0),
                "n={n}: ours {ours}, candle {candle}"
            );
            // SAFETY: as in `dot`.
            let (w41, a81) = unsafe {
                (
                    std::slice::from_raw_parts(w.as_ptr() as *const Q41, w.len()),
                    std::slice::from_raw_parts(a.as_ptr() as *const Q81, a.len()),
                )
            };
            let scalar = q4_1_scalar(w41, a81);
            assert!((scalar - candle).abs() <= 1e-4 * candle.abs().max(1.0));
        }
    }

    #[test]
    fn q4_1_rows_kernel_matches_one_row_at_a_time() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let n = 576;
        let mut w = vec![BlockQ4_1::zeros(); n / 32];
        BlockQ4_1::from_float(&random_row(&mut rng, n), &mut w);
        for m in [1, 3, 4, 7, 8] {
            let mut a = vec![BlockQ8_1::zeros(); m * n / 32];
            quantize_q8_1(&random_row(&mut rng, m * n), &mut a);
            let mut rows = vec![0f32; m];
            <BlockQ4_1 as Kernel>::dot_rows(n, &w, &a, &mut rows);
            for (i, (r, a)) in rows.iter().zip(a.chunks_exact(n / 32)).enumerate() {
                let one = <BlockQ4_1 as Kernel>::dot(n, &w, a);
                assert!(
                    (r - one).abs() <= 1e-4 * one.abs().max(1.0),
                    "m={m}, row {i}: {r} vs {one}"
                );
            }
        }
    }

    #[test]
    fn q8_0_rows_kernel_matches_candles_dot() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let n = 576;
        let mut w = vec![kq::BlockQ8_0::zeros(); n / 32];
        kq::BlockQ8_0::from_float(&random_row(&mut rng, n), &mut w);
        for m in [1, 3, 4, 6, 8] {
            let mut a = vec![kq::BlockQ8_0::zeros(); m * n / 32];
            kq::BlockQ8_0::from_float(&random_row(&mut rng, m * n), &mut a);
            let mut rows = vec![0f32; m];
            <kq::BlockQ8_0 as Kernel>::dot_rows(n, &w, &a, &mut rows);
            for (i, (r, a)) in rows.iter().zip(a.chunks_exact(n / 32)).enumerate() {
                let candle = kq::BlockQ8_0::vec_dot_unopt(n, &w, a);
                assert!(
                    (r - candle).abs() <= 1e-4 * candle.abs().max(1.0),
                    "m={m}, row {i}: {r} vs {candle}"
                );
            }
        }
    }

    #[test]
    fn q8_1_activations_round_their_sum_once_as_ggml_does() {
        // A block whose quantized sum is past f16's exact integers (2048): ggml's `s` is f16(sum * d).
        let x: Vec<f32> = (0..32).map(|i| 2.0 + 0.01 * i as f32).collect();
        let mut a = vec![BlockQ8_1::zeros(); 1];
        <BlockQ4_1 as Kernel>::quantize_activations(&x, &mut a);
        // SAFETY: as in `dot`.
        let a81 = unsafe { &*(a.as_ptr() as *const Q81) };
        let d = x.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
        let sum: i32 = a81.qs.iter().map(|&q| q as i32).sum();
        assert!(sum > 2048, "the block must test sums f16 cannot hold exactly");
        assert_eq!(a81.s, f16::from_f32(sum as f32 * d));
        assert_eq!(a81.d, f16::from_f32(d));
        // Everything but `s` is Candle's quantization.
        let mut candle = vec![BlockQ8_1::zeros(); 1];
        BlockQ8_1::from_float(&x, &mut candle);
        // SAFETY: as in `dot`.
        let c81 = unsafe { &*(candle.as_ptr() as *const Q81) };
        assert_eq!((a81.d, a81.qs), (c81.d, c81.qs));
    }
}
