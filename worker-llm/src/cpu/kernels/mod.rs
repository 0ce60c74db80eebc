//! Dot products of one quantized weight row with one quantized activation row.
//!
//! Candle's kernels serve every GGML type; this module adds SIMD ones where Candle has only a scalar
//! loop or a narrower one. Q4_1 (the type of SmolLM2's and many small models' GGUF files) is one: its
//! scalar dot made decode 0.63x llama.cpp. Q8_0 is the other (token embeddings, so tied output heads:
//! SmolLM2's is 49152 rows). The kernels follow ggml's (`ggml_vec_dot_q4_1_q8_1`,
//! `ggml_vec_dot_q8_0_q8_0`): [`avx2`] everywhere x86-64, [`avx512`] (VNNI) where the CPU has it, chosen
//! at run time. Integer products are exact, so only the order of the f32 sums differs between them.

use candle_core::quantized::k_quants::{BlockQ4_1, BlockQ8_1, GgmlType};
use std::sync::OnceLock;

use half::f16;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod batch;

pub use batch::Packed;

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

    /// `out[r]` = weight row `r` of `w` (rows of `n / BLCK_SIZE` blocks) against one activation row: a
    /// single sequence's product, so that a kernel may load each activation block once for several rows.
    fn dot_many(n: usize, w: &[Self], a: &[Self::VecDotType], out: &mut [f32]) {
        row_by_row(n, w, a, out)
    }

    /// A batch's `m` quantized activation rows (of `n / BLCK_SIZE` blocks) packed for
    /// [`Kernel::dot_packed`], or `None` where this type and CPU have no packed kernel.
    fn pack(n: usize, a: &[Self::VecDotType]) -> Option<Packed> {
        let _ = (n, a);
        None
    }

    /// `out[i]` = one weight row against row `i` of group `g` of `packed` (made by [`Kernel::pack`]
    /// for this type; rows past the group's are left as they are).
    fn dot_packed(w: &[Self], packed: &Packed, g: usize, out: &mut [f32; 8]) {
        let _ = (w, packed, g, out);
        unreachable!("Kernel::pack made no Packed for this type")
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

/// The widest kernels this CPU runs, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Simd {
    /// Portable Rust, or Candle's kernels.
    Scalar,
    /// AVX2 with FMA and F16C.
    Avx2,
    /// AVX-512 (F, BW, VL) with VNNI, besides the AVX2 set.
    Avx512Vnni,
}

/// The kernels' SIMD level: the CPU's best, detected once, or lower where `WORKER_LLM_SIMD` (`avx2`,
/// `scalar`) asks for it (to compare kernels in one build, or to rule one out).
fn simd() -> Simd {
    static LEVEL: OnceLock<Simd> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let best = detect();
        match std::env::var("WORKER_LLM_SIMD").as_deref() {
            Ok("scalar") => Simd::Scalar,
            Ok("avx2") => best.min(Simd::Avx2),
            _ => best,
        }
    })
}

fn detect() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let avx2 = has!("avx2") && has!("fma") && has!("f16c");
        let avx512 = has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni");
        if avx2 && avx512 {
            return Simd::Avx512Vnni;
        }
        if avx2 {
            return Simd::Avx2;
        }
    }
    Simd::Scalar
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

/// [`Kernel::dot_many`] one weight row at a time.
fn row_by_row<T: Kernel>(n: usize, w: &[T], a: &[T::VecDotType], out: &mut [f32]) {
    for (o, w) in out.iter_mut().zip(w.chunks_exact(n / T::BLCK_SIZE)) {
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
    #[cfg(target_arch = "x86_64")]
    if simd() == Simd::Avx512Vnni {
        // SAFETY: the CPU has AVX-512 (F, BW, VL).
        return unsafe { avx512::quantize_q8_1(x, blocks) };
    }
    quantize_q8_1_scalar(x, blocks)
}

/// [`quantize_q8_1`] in portable Rust.
fn quantize_q8_1_scalar(x: &[f32], blocks: &mut [Q81]) {
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

/// A packed kernel: one weight row against a group's blocks, into the group's rows of `out`.
#[cfg(target_arch = "x86_64")]
type PackedKernel<W> = unsafe fn(&[W], &[batch::Lanes], &mut [f32; 8]);

/// One weight row against a packed group with the kernel for its number of row pairs.
#[cfg(target_arch = "x86_64")]
fn packed_by_pairs<W>(w: &[W], packed: &Packed, g: usize, out: &mut [f32; 8], kernels: [PackedKernel<W>; 4]) {
    let (lanes, pairs) = packed.group(g);
    // SAFETY: `pack` made `packed` only where the CPU has the kernels' features; the weight row has
    // the packed rows' blocks (checked by the callers).
    unsafe { kernels[pairs - 1](w, lanes, out) }
}

impl Kernel for kq::BlockQ8_0 {
    fn pack(n: usize, a: &[Self]) -> Option<Packed> {
        let blocks = n / 32;
        if simd() != Simd::Avx512Vnni || blocks == 0 {
            return None;
        }
        // SAFETY: as in `dot`.
        Some(Packed::from_q8_0(unsafe { view(a) }, blocks))
    }

    #[cfg(target_arch = "x86_64")]
    fn dot_packed(w: &[Self], packed: &Packed, g: usize, out: &mut [f32; 8]) {
        use batch::avx512::q8_0;
        let w = &w[..packed.blocks()];
        // SAFETY: as in `dot`.
        let w = unsafe { view::<_, Q80>(w) };
        packed_by_pairs(w, packed, g, out, [q8_0::<1>, q8_0::<2>, q8_0::<3>, q8_0::<4>]);
    }

    fn dot_many(n: usize, w: &[Self], a: &[Self], out: &mut [f32]) {
        let blocks = n / 32;
        #[cfg(target_arch = "x86_64")]
        if simd() == Simd::Avx512Vnni && a.len() >= blocks && w.len() >= out.len() * blocks {
            // SAFETY: as in `dot`.
            let a80 = unsafe { view::<_, Q80>(&a[..blocks]) };
            let four = |four: [&[Self]; 4]| unsafe {
                avx512::q8_0_x4::<false>(blocks, four.map(|r| view(r)), [a80; 4])
            };
            by_fours(blocks, w, out, four, |row| Self::dot(n, row, a));
            return;
        }
        row_by_row(n, w, a, out)
    }

    fn dot_rows(n: usize, w: &[Self], a: &[kq::BlockQ8_0], out: &mut [f32]) {
        let blocks = n / 32;
        #[cfg(target_arch = "x86_64")]
        if simd() >= Simd::Avx2 && w.len() >= blocks && a.len() >= out.len() * blocks {
            // SAFETY: as in `dot`.
            let w80 = unsafe { view::<_, Q80>(&w[..blocks]) };
            // Fewer than four rows: Candle's one-row AVX kernel (it was faster than a one-row AVX2
            // one of ours).
            let one = |row: &[Self]| Self::dot(n, w, row);
            // A batch: the AVX2 kernel. The AVX-512 one (`avx512::q8_0_x4::<true>`, equal to the bit)
            // measured slower in the serving benchmark (8 clients: 108 vs 204 tok/s); not dispatched.
            // SAFETY: as in `dot`.
            let four = |four: [&[Self]; 4]| unsafe { avx2::q8_0_avx2_rows(w80, four.map(|r| view(r))) };
            by_fours(blocks, a, out, four, one);
            return;
        }
        one_by_one(n, w, a, out)
    }
}

impl Kernel for BlockQ4_1 {
    fn pack(n: usize, a: &[BlockQ8_1]) -> Option<Packed> {
        let blocks = n / 32;
        if simd() != Simd::Avx512Vnni || blocks == 0 {
            return None;
        }
        // SAFETY: as in `dot`.
        Some(Packed::from_q8_1(unsafe { view(a) }, blocks))
    }

    #[cfg(target_arch = "x86_64")]
    fn dot_packed(w: &[Self], packed: &Packed, g: usize, out: &mut [f32; 8]) {
        use batch::avx512::q4_1;
        let w = &w[..packed.blocks()];
        // SAFETY: as in `dot`.
        let w = unsafe { view::<_, Q41>(w) };
        packed_by_pairs(w, packed, g, out, [q4_1::<1>, q4_1::<2>, q4_1::<3>, q4_1::<4>]);
    }

    fn dot_many(n: usize, w: &[Self], a: &[BlockQ8_1], out: &mut [f32]) {
        let blocks = n / 32;
        #[cfg(target_arch = "x86_64")]
        if simd() == Simd::Avx512Vnni && a.len() >= blocks && w.len() >= out.len() * blocks {
            // SAFETY: as in `dot`.
            let a81 = unsafe { view::<_, Q81>(&a[..blocks]) };
            let four = |four: [&[Self]; 4]| unsafe {
                avx512::q4_1_x4::<false>(blocks, four.map(|r| view(r)), [a81; 4])
            };
            by_fours(blocks, w, out, four, |row| Self::dot(n, row, a));
            return;
        }
        row_by_row(n, w, a, out)
    }

    fn quantize_activations(x: &[f32], out: &mut [BlockQ8_1]) {
        quantize_q8_1(x, out)
    }

    fn dot(n: usize, w: &[Self], a: &[BlockQ8_1]) -> f32 {
        let blocks = n / 32;
        // SAFETY: Q41 and Q81 are field-for-field copies of Candle's #[repr(C)] blocks (sizes and
        // alignments asserted above), and every bit pattern is a valid value of their fields.
        let (w, a) = unsafe { (view(&w[..blocks.min(w.len())]), view(&a[..blocks.min(a.len())])) };
        match simd() {
            // SAFETY: the CPU has the features the kernels are compiled for.
            // (The AVX-512 kernels take four rows; their results equal this one's to the bit.)
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512Vnni | Simd::Avx2 => unsafe { avx2::q4_1_avx2(w, a) },
            _ => q4_1_scalar(w, a),
        }
    }

    fn dot_rows(n: usize, w: &[Self], a: &[BlockQ8_1], out: &mut [f32]) {
        let blocks = n / 32;
        #[cfg(target_arch = "x86_64")]
        if simd() >= Simd::Avx2 && w.len() >= blocks && a.len() >= out.len() * blocks {
            // SAFETY: as in `dot`.
            let w41 = unsafe { view::<_, Q41>(&w[..blocks]) };
            let one = |row: &[BlockQ8_1]| Self::dot(n, w, row);
            // A batch: the AVX2 kernel. The AVX-512 one (`avx512::q4_1_x4::<true>`, equal to the bit)
            // measured slower in the serving benchmark (8 clients: 108 vs 204 tok/s); not dispatched.
            // SAFETY: as in `dot`.
            let four = |four: [&[BlockQ8_1]; 4]| unsafe { avx2::q4_1_avx2_rows(w41, four.map(|r| view(r))) };
            by_fours(blocks, a, out, four, one);
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

#[cfg(test)]
mod tests;
