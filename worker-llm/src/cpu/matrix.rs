//! Quantized weight matrices read straight from a GGUF file, multiplied on Candle's CPU thread pool.
//!
//! A matrix keeps its GGML blocks as they are in the file (no f32 copy: SmolLM2's 49152 x 576 token
//! embedding stays 30 MB instead of 113 MB) and may hold several GGUF tensors stacked by rows, so that
//! Q, K and V (or gate and up) are one multiplication and one synchronisation of the pool.

use std::fs::File;

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::k_quants::{self as kq, GgmlType};
use half::f16;

use super::SharedOut;
use super::kernels::Kernel;
use crate::error::{LlmError, Result};

/// Weight rows that one pool work item takes: enough to amortise the shared cursor, few enough to
/// balance two threads on 192-row matrices.
const ROWS_PER_ITEM: usize = 16;

/// Rows of one GGML block type.
pub struct Rows<T> {
    blocks: Vec<T>,
    rows: usize,
    cols: usize,
}

impl<T: Kernel> Rows<T> {
    fn blocks_per_row(&self) -> usize {
        self.cols / T::BLCK_SIZE
    }

    fn row(&self, r: usize) -> &[T] {
        let b = self.blocks_per_row();
        &self.blocks[r * b..(r + 1) * b]
    }

    /// `out[i][r] = x[i] . row r` for the `m` rows of `x`; `out` rows are `stride` apart.
    fn matmul(&self, x: &[f32], m: usize, out: &mut [f32], stride: usize) {
        let (k, n, b) = (self.cols, self.rows, self.blocks_per_row());
        let mut act = vec![T::VecDotType::zeros(); m * b];
        for i in 0..m {
            T::quantize_activations(&x[i * k..(i + 1) * k], &mut act[i * b..(i + 1) * b]);
        }
        let out_ptr = SharedOut(out.as_mut_ptr());
        // A batch: its rows packed eight by eight, each weight row against a packed group at once.
        if let Some(packed) = (m >= 2).then(|| T::pack(k, &act)).flatten() {
            let packed = &packed;
            super::pool().execute_chunked(n.div_ceil(ROWS_PER_ITEM), |items| {
                let out_ptr = &out_ptr;
                let rows = items.start * ROWS_PER_ITEM..(items.end * ROWS_PER_ITEM).min(n);
                let mut dots = [0f32; 8];
                // Groups outside, so that the item's weight rows stay in cache for every group.
                for g in 0..packed.groups() {
                    for r in rows.clone() {
                        T::dot_packed(self.row(r), packed, g, &mut dots);
                        for (i, &d) in packed.group_rows(g).zip(&dots) {
                            // SAFETY: as below.
                            unsafe { *out_ptr.0.add(i * stride + r) = d };
                        }
                    }
                }
            });
            return;
        }
        let act = &act;
        // Activation rows by fours, each weight row against four (a kernel unpacks its blocks once);
        // the rest (a single sequence's only row) each against the item's weight rows together.
        let fours = m / 4 * 4;
        super::pool().execute_chunked(n.div_ceil(ROWS_PER_ITEM), |items| {
            let out_ptr = &out_ptr;
            let rows = items.start * ROWS_PER_ITEM..(items.end * ROWS_PER_ITEM).min(n);
            let mut dots = vec![0f32; fours.max(rows.len())];
            let write = |i: usize, r: usize, d: f32| {
                // SAFETY: `out` holds m rows of `stride >= n`; each (i, r) is written by the one
                // work item that owns row r.
                unsafe { *out_ptr.0.add(i * stride + r) = d };
            };
            if fours > 0 {
                for r in rows.clone() {
                    T::dot_rows(k, self.row(r), &act[..fours * b], &mut dots[..fours]);
                    for (i, &d) in dots[..fours].iter().enumerate() {
                        write(i, r, d);
                    }
                }
            }
            let weights = &self.blocks[rows.start * b..rows.end * b];
            for i in fours..m {
                let dots = &mut dots[..rows.len()];
                T::dot_many(k, weights, &act[i * b..(i + 1) * b], dots);
                for (r, &d) in rows.clone().zip(dots.iter()) {
                    write(i, r, d);
                }
            }
        });
    }

    fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        T::to_float(self.row(r), out);
    }
}

macro_rules! matrices {
    ($($variant:ident => $block:ty),* $(,)?) => {
        /// A weight matrix of any supported GGML type.
        pub enum Matrix { $($variant(Rows<$block>)),* }

        impl Matrix {
            fn read(dtype: GgmlDType, parts: &[Part], file: &File) -> Result<Option<Matrix>> {
                Ok(match dtype {
                    $(GgmlDType::$variant => Some(Matrix::$variant(read_rows(parts, file)?)),)*
                    _ => None,
                })
            }

            /// `out[i][..rows] = W x[i]` for `m` rows of `x` (`cols` wide); `out` rows are `stride` apart.
            pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32], stride: usize) {
                assert!(x.len() >= m * self.cols() && stride >= self.rows());
                assert!(m == 0 || out.len() >= (m - 1) * stride + self.rows());
                match self { $(Matrix::$variant(r) => r.matmul(x, m, out, stride)),* }
            }

            /// Row `r` as f32 (an embedding lookup).
            pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
                match self { $(Matrix::$variant(m) => m.dequantize_row(r, out)),* }
            }

            /// Output features.
            pub fn rows(&self) -> usize {
                match self { $(Matrix::$variant(m) => m.rows),* }
            }

            /// Input features.
            pub fn cols(&self) -> usize {
                match self { $(Matrix::$variant(m) => m.cols),* }
            }
        }
    };
}

matrices!(
    F32 => f32,
    F16 => f16,
    Q4_0 => kq::BlockQ4_0,
    Q4_1 => kq::BlockQ4_1,
    Q5_0 => kq::BlockQ5_0,
    Q5_1 => kq::BlockQ5_1,
    Q8_0 => kq::BlockQ8_0,
    Q2K => kq::BlockQ2K,
    Q3K => kq::BlockQ3K,
    Q4K => kq::BlockQ4K,
    Q5K => kq::BlockQ5K,
    Q6K => kq::BlockQ6K,
);

/// One GGUF tensor to stack into a matrix.
struct Part {
    name: String,
    offset: u64,
    rows: usize,
    cols: usize,
}

/// Why a tensor cannot be read by this module (the caller may fall back to Candle's own model).
#[derive(Debug)]
pub enum Unsupported {
    /// A GGML type without a CPU kernel here (BF16...).
    Type(GgmlDType),
    /// Stacked tensors of different types.
    MixedTypes,
    /// Something of the architecture this module does not do (a rotary scaling, a tensor dtype).
    Feature(String),
}

impl Matrix {
    /// A matrix of f32 rows (`data` is `rows * cols` long), as HuggingFace checkpoints give them.
    pub fn from_f32(rows: usize, cols: usize, data: Vec<f32>) -> Matrix {
        assert_eq!(data.len(), rows * cols, "a {rows} x {cols} matrix");
        Matrix::F32(Rows {
            blocks: data,
            rows,
            cols,
        })
    }

    /// Reads the named tensors, stacked by rows, into one matrix. `Ok(Err(..))` when this module
    /// cannot hold them; `Err` when the file is broken.
    pub fn load(
        content: &Content,
        file: &File,
        names: &[&str],
    ) -> Result<std::result::Result<Matrix, Unsupported>> {
        let mut dtype = None;
        let mut parts = Vec::new();
        for name in names {
            let info = content
                .tensor_infos
                .get(*name)
                .ok_or_else(|| broken(format!("no tensor `{name}`")))?;
            let (rows, cols) = match info.shape.dims() {
                [cols] => (1, *cols),
                [rows, cols] => (*rows, *cols),
                dims => {
                    return Err(broken(format!(
                        "tensor `{name}` has shape {dims:?}, not a matrix"
                    )));
                }
            };
            if dtype.is_some_and(|d| d != info.ggml_dtype) {
                return Ok(Err(Unsupported::MixedTypes));
            }
            dtype = Some(info.ggml_dtype);
            parts.push(Part {
                name: name.to_string(),
                offset: content.tensor_data_offset + info.offset,
                rows,
                cols,
            });
        }
        let Some(dtype) = dtype else {
            return Err(broken("no tensor names given".into()));
        };
        Ok(Matrix::read(dtype, &parts, file)?.ok_or(Unsupported::Type(dtype)))
    }
}

fn broken(reason: String) -> LlmError {
    LlmError::Config {
        file: "GGUF".into(),
        reason,
    }
}

fn read_rows<T: Kernel>(parts: &[Part], file: &File) -> Result<Rows<T>> {
    let cols = parts[0].cols;
    if let Some(p) = parts.iter().find(|p| p.cols != cols) {
        return Err(broken(format!(
            "tensor `{}` has {} columns, not {cols}",
            p.name, p.cols
        )));
    }
    if !cols.is_multiple_of(T::BLCK_SIZE) {
        return Err(broken(format!(
            "tensor `{}` rows of {cols} are not whole {:?} blocks",
            parts[0].name,
            T::DTYPE
        )));
    }
    let per_row = cols / T::BLCK_SIZE;
    let rows: usize = parts.iter().map(|p| p.rows).sum();
    let mut blocks = vec![T::zeros(); rows * per_row];
    let mut at = 0;
    for p in parts {
        let n = p.rows * per_row;
        let dst = &mut blocks[at..at + n];
        // SAFETY: GGML blocks are plain old data (floats and integer arrays, #[repr(C)], sizes fixed
        // by ggml), so any bytes are a valid value; the slice covers exactly `dst`.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut u8, std::mem::size_of_val(dst))
        };
        read_exact_at(file, bytes, p.offset)
            .map_err(|e| broken(format!("tensor `{}` cannot be read: {e}", p.name)))?;
        at += n;
    }
    Ok(Rows { blocks, rows, cols })
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}
