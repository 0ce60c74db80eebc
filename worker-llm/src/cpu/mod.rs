//! CPU building blocks for GGUF transformers, used where Candle's quantized models are slower than
//! they need to be on a CPU.
//!
//! Candle's `quantized_llama` keeps a 113 MB f32 copy of SmolLM2's token embedding, concatenates the
//! whole KV cache and repeats its heads at every step, and multiplies Q4_1 weights with a scalar loop.
//! Here weights stay in their GGML blocks ([`matrix`]), the cache grows in place and grouped heads
//! read it directly ([`ops::paged_attention`], over the engine's paged f16 cache), and Q4_1 has a SIMD
//! dot ([`kernels`]). Work runs on this module's own [`pool`] (`RAYON_NUM_THREADS` threads), made not to
//! collapse when other processes take a core. GPUs, and GGML types without a block here, run the same
//! decoder on Candle's ops (`models/decoder/device.rs`).

pub mod kernels;
pub mod matrix;
pub mod ops;
pub mod pool;

pub use matrix::{Matrix, Unsupported};
pub use pool::pool;

use candle_core::quantized::gguf_file::Content;
use std::fs::File;

use crate::error::Result;

/// An output buffer shared by the pool's workers, each writing elements no other touches.
struct SharedOut(*mut f32);
// SAFETY: every user writes disjoint elements from its work items, and Candle's pool returns before
// the buffer's borrow ends.
unsafe impl Sync for SharedOut {}

/// Several GGUF tensors applied to the same input, stacked by rows (Q, K and V; gate and up): one
/// matrix when their types agree, else one per type.
pub struct Linear {
    parts: Vec<Matrix>,
}

impl From<Matrix> for Linear {
    fn from(m: Matrix) -> Linear {
        Linear { parts: vec![m] }
    }
}

impl Linear {
    /// Reads `names` in order; their outputs follow each other in each output row.
    pub fn load(
        content: &Content,
        file: &File,
        names: &[&str],
    ) -> Result<std::result::Result<Linear, Unsupported>> {
        match Matrix::load(content, file, names)? {
            Ok(m) => Ok(Ok(Linear { parts: vec![m] })),
            Err(Unsupported::MixedTypes) => {
                let mut parts = Vec::with_capacity(names.len());
                for name in names {
                    match Matrix::load(content, file, &[name])? {
                        Ok(m) => parts.push(m),
                        Err(e) => return Ok(Err(e)),
                    }
                }
                Ok(Ok(Linear { parts }))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// Output features of all parts together.
    pub fn rows(&self) -> usize {
        self.parts.iter().map(Matrix::rows).sum()
    }

    /// Input features (0 when the parts disagree, which a shape check then refuses).
    pub fn cols(&self) -> usize {
        let cols = self.parts.first().map_or(0, Matrix::cols);
        match self.parts.iter().all(|p| p.cols() == cols) {
            true => cols,
            false => 0,
        }
    }

    /// `out[i] = [W1 x[i], W2 x[i], ...]` for `m` rows of `x`; `out` rows are [`Linear::rows`] long.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        let stride = self.rows();
        let mut offset = 0;
        for part in &self.parts {
            part.matmul(x, m, &mut out[offset..], stride);
            offset += part.rows();
        }
    }
}

/// A 1-D weight (a norm's scale) as f32.
pub fn vector(
    content: &Content,
    file: &File,
    name: &str,
) -> Result<std::result::Result<Vec<f32>, Unsupported>> {
    Ok(Matrix::load(content, file, &[name])?.map(|m| {
        let mut v = vec![0.0; m.cols()];
        m.dequantize_row(0, &mut v);
        v
    }))
}
