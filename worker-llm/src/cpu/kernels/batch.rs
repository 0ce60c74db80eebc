//! A batch's activation rows packed eight by eight, and the AVX-512 VNNI kernels that take one weight
//! row against a packed group of up to eight rows.
//!
//! In the row-major layout a batch kernel gathers each row's f16 scales one by one and loads each row's
//! 32 quants separately; at eight clients that bookkeeping, not the integer products, was most of the
//! step (the AVX2 four-row kernels: 65% of a step's time). Packed once per product (a few KB), a block
//! of eight rows is 256 contiguous bytes of quants (two rows per 512-bit register, one `vpdpbusd` each
//! pair) and their scales already f32 and laid out as the kernel multiplies them, so that per weight
//! block and pair of rows the kernel runs one dot, one conversion, one scale product and one FMA, the
//! weight block unpacked once for the eight rows.
//!
//! Each row's f32 arithmetic is the one-row kernels' (ggml's) to the bit: per block, the eight lanes of
//! exact integer sums times the block's scale added into eight lanes in block order (a row's eight lanes
//! are one half of a 512-bit accumulator), Q4_1's offsets summed in block order, the same final sum.

use half::f16;

use super::{Q80, Q81};

/// Rows of a packed group.
pub(super) const GROUP: usize = 8;

/// Block `j` of a group of eight activation rows.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(super) struct Lanes {
    /// Row `r`'s 32 quants.
    qs: [[i8; 32]; GROUP],
    /// Pair `p`: row `2p`'s scale eight times, then row `2p + 1`'s (one 512-bit register).
    d: [[f32; 16]; GROUP / 2],
    /// Row `r`'s `s` (Q8_1's scaled sum; 0 for Q8_0).
    s: [f32; GROUP],
}

const EMPTY: Lanes = Lanes {
    qs: [[0; 32]; GROUP],
    d: [[0.0; 16]; GROUP / 2],
    s: [0.0; GROUP],
};

/// A batch's quantized activation rows, eight by eight (the last group padded with zeros).
pub struct Packed {
    lanes: Vec<Lanes>,
    blocks: usize,
    rows: usize,
}

impl Packed {
    fn new(rows: usize, blocks: usize) -> Packed {
        Packed {
            lanes: vec![EMPTY; rows.div_ceil(GROUP) * blocks],
            blocks,
            rows,
        }
    }

    fn set(&mut self, row: usize, j: usize, qs: &[i8; 32], d: f16, s: f16) {
        let (g, r) = (row / GROUP, row % GROUP);
        let l = &mut self.lanes[g * self.blocks + j];
        l.qs[r] = *qs;
        l.d[r / 2][(r % 2) * 8..][..8].fill(d.to_f32());
        l.s[r] = s.to_f32();
    }

    /// Q8_1 rows of `blocks` blocks each.
    pub(super) fn from_q8_1(a: &[Q81], blocks: usize) -> Packed {
        let mut p = Packed::new(a.len() / blocks, blocks);
        for (i, row) in a.chunks_exact(blocks).enumerate() {
            for (j, b) in row.iter().enumerate() {
                p.set(i, j, &b.qs, b.d, b.s);
            }
        }
        p
    }

    /// Q8_0 rows of `blocks` blocks each.
    pub(super) fn from_q8_0(a: &[Q80], blocks: usize) -> Packed {
        let mut p = Packed::new(a.len() / blocks, blocks);
        for (i, row) in a.chunks_exact(blocks).enumerate() {
            for (j, b) in row.iter().enumerate() {
                p.set(i, j, &b.qs, b.d, f16::ZERO);
            }
        }
        p
    }

    /// Blocks of each row.
    pub(super) fn blocks(&self) -> usize {
        self.blocks
    }

    /// Groups of (up to) eight rows.
    pub fn groups(&self) -> usize {
        self.rows.div_ceil(GROUP)
    }

    /// The activation rows of group `g`.
    pub fn group_rows(&self, g: usize) -> std::ops::Range<usize> {
        g * GROUP..((g + 1) * GROUP).min(self.rows)
    }

    /// Group `g`'s blocks and the pairs of rows in it.
    pub(super) fn group(&self, g: usize) -> (&[Lanes], usize) {
        let lanes = &self.lanes[g * self.blocks..(g + 1) * self.blocks];
        (lanes, self.group_rows(g).len().div_ceil(2))
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    use super::super::avx512::{pair, prefetch, reduce256};
    use super::super::{Q41, Q80};
    use super::{GROUP, Lanes};

    /// Each row pair's 512-bit accumulator as two rows' sums (`out[2p]`, `out[2p + 1]`).
    #[target_feature(enable = "avx512f,avx2")]
    fn finish<const P: usize>(acc: [__m512; P], out: &mut [f32; GROUP]) {
        for (p, acc) in acc.iter().enumerate() {
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(*acc), 1));
            out[2 * p] = reduce256(_mm512_castps512_ps256(*acc));
            out[2 * p + 1] = reduce256(hi);
        }
    }

    /// One Q4_1 weight row (`w.len()` blocks) against `2 * P` packed Q8_1 rows: each result equal to
    /// the bit to [`super::super::avx2::q4_1_avx2`]'s.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(in super::super) unsafe fn q4_1<const P: usize>(w: &[Q41], lanes: &[Lanes], out: &mut [f32; GROUP]) {
        let mut acc = [_mm512_setzero_ps(); P];
        // Q4_1's offset times each row's activation sum, added block by block.
        let mut offsets = _mm256_setzero_ps();
        let low = _mm256_set1_epi8(0x0F);
        for (j, (wj, l)) in w.iter().zip(lanes).enumerate() {
            // The next weight row (the caller's next) into cache: weights stream from memory.
            prefetch(w, j, w.len());
            let w = wj;
            // [w.d, w.m] as f32, as the one-row kernel converts them.
            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(pair(w.d, w.m)));
            let d = _mm512_broadcastss_ps(dm);
            let m = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
            // SAFETY (all loads here): the arrays hold what is loaded; unaligned loads.
            let s = unsafe { _mm256_loadu_ps(l.s.as_ptr()) };
            offsets = _mm256_add_ps(offsets, _mm256_mul_ps(m, s));
            // 16 bytes of nibbles -> 32 bytes 0..15 (low nibbles, then high ones), in both halves.
            let packed = unsafe { _mm_loadu_si128(w.qs.as_ptr() as *const __m128i) };
            let qw = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low);
            let qw = _mm512_broadcast_i64x4(qw);
            for (p, acc) in acc.iter_mut().enumerate() {
                let qa = unsafe { _mm512_loadu_si512(l.qs[2 * p].as_ptr() as *const _) };
                let x = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), qw, qa));
                let scale = _mm512_mul_ps(d, unsafe { _mm512_loadu_ps(l.d[p].as_ptr()) });
                *acc = _mm512_fmadd_ps(scale, x, *acc);
            }
        }
        let mut offs = [0f32; GROUP];
        // SAFETY: `offs` holds eight f32.
        unsafe { _mm256_storeu_ps(offs.as_mut_ptr(), offsets) };
        finish(acc, out);
        for (o, offset) in out.iter_mut().zip(offs).take(2 * P) {
            *o += offset;
        }
    }

    /// One Q8_0 weight row against `2 * P` packed Q8_0 rows (`|w|` times the activations with `w`'s
    /// signs, u8 x i8, as ggml's `ggml_vec_dot_q8_0_q8_0`): each result equal to the bit to Candle's
    /// one-row AVX kernel's.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(in super::super) unsafe fn q8_0<const P: usize>(w: &[Q80], lanes: &[Lanes], out: &mut [f32; GROUP]) {
        let mut acc = [_mm512_setzero_ps(); P];
        for (j, (wj, l)) in w.iter().zip(lanes).enumerate() {
            prefetch(w, j, w.len());
            let w = wj;
            let d = _mm512_set1_ps(w.d.to_f32());
            // SAFETY (all loads here): the arrays hold what is loaded; unaligned loads.
            let qw = unsafe { _mm256_loadu_si256(w.qs.as_ptr() as *const __m256i) };
            let qw = _mm512_broadcast_i64x4(qw);
            let (negative, uw) = (_mm512_movepi8_mask(qw), _mm512_abs_epi8(qw));
            for (p, acc) in acc.iter_mut().enumerate() {
                let qa = unsafe { _mm512_loadu_si512(l.qs[2 * p].as_ptr() as *const _) };
                let sa = _mm512_mask_sub_epi8(qa, negative, _mm512_setzero_si512(), qa);
                let x = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), uw, sa));
                let scale = _mm512_mul_ps(d, unsafe { _mm512_loadu_ps(l.d[p].as_ptr()) });
                *acc = _mm512_fmadd_ps(scale, x, *acc);
            }
        }
        finish(acc, out);
    }
}
