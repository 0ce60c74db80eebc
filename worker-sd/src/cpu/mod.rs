//! CPU kernels for the image models' hot layers, used where Candle's CPU path is slower than it needs to be.
//!
//! Candle's CPU `conv2d` repacks the weights at every call, transposes the input to channels-last serially
//! and scatters its output element by element; its attention materialises the whole score matrix (at 64x64
//! latents, 4096x4096 per head: 1 GiB for SD 1.5's 16 heads of a guided step) and takes `exp` one element at
//! a time; its GroupNorm is a dozen tensor passes, and SiLU another two. Here:
//! - [`conv`]: convolution as im2col tiles (or the input itself for 1x1) times the weights in their file
//!   layout, on the `gemm` crate (the GEMM Candle itself uses), bias written first, output in place; an
//!   upsampler's nearest-neighbour doubling read through the im2col tiles;
//! - [`attention`]: attention by blocks of queries and of keys with an online softmax (flash-attention
//!   style), reading Q, K and V in their `(batch, tokens, heads * dim)` layout (no head transposes): neither
//!   the score matrix nor a whole score row ever exists;
//! - [`norm`]: GroupNorm with the SiLU that follows it fused, in one read and one write;
//! - [`math`]: an `exp` that vectorises.
//!
//! Work is split over Rayon's pool (`RAYON_NUM_THREADS`, as Candle), each GEMM single-threaded inside.
//! Every kernel takes float32 CPU tensors; callers keep Candle's ops for other devices and dtypes.

pub mod attention;
pub mod conv;
pub mod linear;
pub mod math;
pub mod norm;
pub mod profile;

use candle_core::{DType, Device, Result, Storage, Tensor};
use rayon::prelude::*;

/// Whether `x` is a float32 tensor in CPU memory: what these kernels take.
pub fn applies(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32
}

/// Calls `f` with the float32 elements of a contiguous CPU tensor.
pub(crate) fn with_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("the CPU kernels take CPU tensors")
    };
    let data = cpu.as_slice::<f32>()?;
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("the CPU kernels take contiguous tensors")
    };
    Ok(f(&data[start..end]))
}

/// Calls `f` with the float32 elements of a CPU tensor read as rows of its last dimension, and the row
/// stride, without a copy when its rows are contiguous and evenly spaced (a contiguous tensor, or a narrow
/// of a contiguous tensor's last dimension: one stream's Q, K, V of a fused projection); else a copy.
pub(crate) fn with_rows<R>(t: &Tensor, f: impl FnOnce(&[f32], usize) -> R) -> Result<R> {
    let (Some(&w), Some(&last)) = (t.dims().last(), t.stride().last()) else {
        candle_core::bail!("the CPU kernels take tensors of at least one dimension")
    };
    let rows = t.elem_count() / w.max(1);
    let dims = t.dims();
    let strides = t.stride();
    let r = dims.len();
    let row_stride = if r >= 2 { strides[r - 2] } else { w };
    let evenly = last == 1
        && row_stride >= w
        && (0..r.saturating_sub(2)).all(|i| dims[i] == 1 || strides[i] == strides[i + 1] * dims[i + 1]);
    if !evenly || rows == 0 {
        return with_slice(&t.contiguous()?, |xs| f(xs, w));
    }
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("the CPU kernels take CPU tensors")
    };
    let data = cpu.as_slice::<f32>()?;
    let start = layout.start_offset();
    let end = start + (rows - 1) * row_stride + w;
    match data.get(start..end) {
        Some(xs) => Ok(f(xs, row_stride)),
        None => candle_core::bail!("a tensor's rows lie outside its storage"),
    }
}

/// An output buffer written by several threads, each to elements no other touches.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub(crate) *mut f32);
// SAFETY: users write disjoint elements from each work item, and the parallel loop ends before the
// buffer's borrow does.
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}

thread_local! {
    /// Each thread's scratch buffer (im2col tiles, score blocks), kept between calls: a fresh
    /// allocation of a few MiB per work item costs a page fault per page.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Calls `f` with this thread's scratch buffer of `len` elements (contents unspecified).
/// `f` must not start parallel work that could run another scratch user on this thread.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        // Re-entered (cannot happen with the loops below): a buffer of its own.
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// Runs `f` on every item: in parallel with single-threaded GEMMs when there are enough items to keep the
/// threads busy, else one after the other with GEMMs that split themselves (`f`'s argument says which).
pub(crate) fn for_items(items: usize, f: impl Fn(usize, bool) + Sync) {
    if items >= threads() {
        (0..items).into_par_iter().for_each(|i| f(i, false));
    } else {
        (0..items).for_each(|i| f(i, true));
    }
}

/// Rayon's thread count: how many work items a kernel needs to keep every thread busy.
pub(crate) fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// `dst := beta * lhs * rhs (+ dst when read_dst)`, single-threaded, with element strides (row, column).
///
/// # Safety
/// Every pointer must address the whole matrix its strides and sizes describe, and `dst` must not overlap
/// the inputs nor be written by another thread meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    (m, n, k): (usize, usize, usize),
    dst: (*mut f32, usize, usize),
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    read_dst: bool,
    beta: f32,
    parallel: bool,
) {
    let parallelism = if parallel && threads() > 1 {
        gemm::Parallelism::Rayon(threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: forwarded to the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0,
            dst.2 as isize,
            dst.1 as isize,
            read_dst,
            lhs.0,
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0,
            rhs.2 as isize,
            rhs.1 as isize,
            1.0,
            beta,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use candle_core::{Device, Tensor};

    /// A random float32 tensor, reproducible by seed.
    pub fn random(shape: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        Tensor::from_vec(data, shape, &Device::Cpu).expect("shape matches")
    }

    /// The largest absolute difference between two tensors of the same shape.
    pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.flatten_all())
            .and_then(|d| d.max(0))
            .and_then(|d| d.to_scalar::<f32>())
            .expect("float32 tensors")
    }
}
