//! 2D convolution (NCHW, groups 1, dilation 1) as GEMMs: the weights `(c_out, c_in * kh * kw)` as they are
//! stored, times im2col tiles of the input (the input itself for 1x1 kernels), written straight into the
//! NCHW output after its bias. The upsamplers' nearest-neighbour doubling is folded into the im2col tiles
//! ([`conv2d_upsampled`]): the doubled input, 4x the input's memory, never exists.

use super::{SharedOut, for_items, gemm, with_scratch, with_slice};
use candle_core::{Result, Tensor};

/// Output columns (pixels) per im2col tile: large enough for the GEMM to run at speed, small enough for
/// the tile to stay in cache and for the tiles to spread over the threads.
const TILE_COLUMNS: usize = 256;

/// `conv2d(x, weight) + bias` for float32 CPU tensors: `x` `(b, c_in, h, w)`, `weight`
/// `(c_out, c_in, kh, kw)`, `bias` `(c_out)`.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv(x, weight, bias, Addends::default(), stride, padding, 1)
}

/// What is added to a convolution's output besides its bias, in the same pass that writes the bias.
#[derive(Default, Clone, Copy)]
pub struct Addends<'a> {
    /// `(b, c_out)`: one value per image and output channel (a resnet's time embedding).
    pub per_channel: Option<&'a Tensor>,
    /// The output's shape: a residual connection.
    pub residual: Option<&'a Tensor>,
}

/// `conv2d(x, weight) + bias + addends`, as [`conv2d`] with the additions folded into the output's
/// first write instead of passes of their own.
pub fn conv2d_add(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    addends: Addends,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv(x, weight, bias, addends, stride, padding, 1)
}

/// `conv2d(upsample_nearest2d(x, 2 h, 2 w), weight) + bias` (stride 1), without the upsampled input.
pub fn conv2d_upsampled(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    padding: usize,
) -> Result<Tensor> {
    conv(x, weight, bias, Addends::default(), 1, padding, 2)
}

/// The convolution of `x` with each pixel repeated `up` x `up` times.
fn conv(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    addends: Addends,
    stride: usize,
    padding: usize,
    up: usize,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let weight = weight.contiguous()?;
    let (b, c_in, h, w) = x.dims4()?;
    let (c_out, c_in_w, kh, kw) = weight.dims4()?;
    let (vh, vw) = (h * up, w * up);
    if c_in != c_in_w || stride == 0 || vh + 2 * padding < kh || vw + 2 * padding < kw {
        candle_core::bail!(
            "conv2d: input {:?} does not fit weight {:?} (stride {stride}, padding {padding})",
            x.dims(),
            weight.dims()
        );
    }
    let (oh, ow) = (
        (vh + 2 * padding - kh) / stride + 1,
        (vw + 2 * padding - kw) / stride + 1,
    );
    let pixels = oh * ow;
    let mut out = match addends.residual {
        Some(r) if r.dims() == [b, c_out, oh, ow] => with_slice(&r.contiguous()?, |r| r.to_vec())?,
        Some(r) => candle_core::bail!("conv2d: residual {:?} is not the output's shape", r.dims()),
        None => vec![0f32; b * c_out * pixels],
    };
    // One value per output plane: the bias plus the per-image, per-channel addend.
    let mut plane_add = vec![0f32; b * c_out];
    if let Some(bias) = bias {
        with_slice(&bias.contiguous()?, |bias| {
            // Planes cycle through the output channels, batch after batch.
            for (i, v) in plane_add.iter_mut().enumerate() {
                *v = bias[i % c_out];
            }
        })?;
    }
    if let Some(extra) = addends.per_channel {
        if extra.elem_count() != b * c_out {
            candle_core::bail!("conv2d: per-channel addend {:?} for {b} x {c_out}", extra.dims());
        }
        with_slice(&extra.contiguous()?, |extra| {
            plane_add.iter_mut().zip(extra).for_each(|(v, e)| *v += e);
        })?;
    }
    let read_dst = bias.is_some() || addends.per_channel.is_some() || addends.residual.is_some();
    if read_dst {
        for (plane, &v) in out.chunks_exact_mut(pixels).zip(&plane_add) {
            if addends.residual.is_some() {
                plane.iter_mut().for_each(|o| *o += v);
            } else {
                plane.fill(v);
            }
        }
    }
    let geometry = Geometry {
        c_in,
        h,
        w,
        kh,
        kw,
        stride,
        padding,
        oh,
        ow,
        c_out,
        up,
    };
    with_slice(&x, |xs| {
        with_slice(&weight, |ws| geometry.run(b, xs, ws, &mut out, read_dst))
    })???;
    Tensor::from_vec(out, (b, c_out, oh, ow), x.device())
}

/// The sizes of one convolution: the input is `h` x `w`, seen `up` times larger.
struct Geometry {
    c_in: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    padding: usize,
    oh: usize,
    ow: usize,
    c_out: usize,
    up: usize,
}

impl Geometry {
    fn run(&self, b: usize, xs: &[f32], ws: &[f32], out: &mut [f32], read_dst: bool) -> Result<()> {
        let pixels = self.oh * self.ow;
        let k = self.c_in * self.kh * self.kw;
        let rows_per_tile = TILE_COLUMNS.div_ceil(self.ow).clamp(1, self.oh);
        let tiles = self.oh.div_ceil(rows_per_tile);
        let items = b * tiles;
        let direct = self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0 && self.up == 1;
        let dst = SharedOut(out.as_mut_ptr());
        for_items(items, |item, parallel_gemm| {
            let (bi, tile) = (item / tiles, item % tiles);
            let row0 = tile * rows_per_tile;
            let rows = rows_per_tile.min(self.oh - row0);
            let cols = rows * self.ow;
            let input = &xs[bi * self.c_in * self.h * self.w..][..self.c_in * self.h * self.w];
            let dst = &dst;
            let multiply = |rhs: *const f32, rhs_rs: usize| {
                // SAFETY: the tile's output block (all channels, pixels row0*ow .. +cols of image bi) is
                // written by this item only; weights, input and im2col tile cover what their strides say.
                unsafe {
                    gemm(
                        (self.c_out, cols, k),
                        (dst.0.add(bi * self.c_out * pixels + row0 * self.ow), pixels, 1),
                        (ws.as_ptr(), k, 1),
                        (rhs, rhs_rs, 1),
                        read_dst,
                        1.0,
                        parallel_gemm,
                    )
                }
            };
            if direct {
                multiply(input[row0 * self.ow..].as_ptr(), self.h * self.w);
            } else {
                with_scratch(k * cols, |col| {
                    self.im2col(input, row0, rows, col);
                    multiply(col.as_ptr(), cols);
                });
            }
        });
        Ok(())
    }

    /// Writes into `col` the `(c_in * kh * kw, rows * ow)` patch matrix of output rows `row0 .. row0 + rows`.
    fn im2col(&self, input: &[f32], row0: usize, rows: usize, col: &mut [f32]) {
        let cols = rows * self.ow;
        let pad = self.padding as isize;
        let (vh, vw) = (self.h * self.up, self.w * self.up);
        for (r, patch_row) in col.chunks_exact_mut(cols).enumerate() {
            let (ci, dy, dx) = (r / (self.kh * self.kw), r / self.kw % self.kh, r % self.kw);
            let plane = &input[ci * self.h * self.w..][..self.h * self.w];
            // Output x whose (upsampled) input x = x * stride + dx - pad lies inside the row.
            let x_lo = ((pad - dx as isize).max(0) as usize).div_ceil(self.stride);
            let x_hi = ((vw as isize + pad - dx as isize + self.stride as isize - 1) / self.stride as isize)
                .clamp(0, self.ow as isize) as usize;
            for (ty, seg) in patch_row.chunks_exact_mut(self.ow).enumerate() {
                let in_y = ((row0 + ty) * self.stride + dy) as isize - pad;
                if in_y < 0 || in_y >= vh as isize || x_lo >= x_hi {
                    seg.fill(0.0); // padding
                    continue;
                }
                seg[..x_lo].fill(0.0);
                seg[x_hi..].fill(0.0);
                let src = &plane[in_y as usize / self.up * self.w..][..self.w];
                let first = (x_lo * self.stride + dx) - self.padding;
                let seg = &mut seg[x_lo..x_hi];
                match (self.stride, self.up) {
                    (1, 1) => seg.copy_from_slice(&src[first..first + seg.len()]),
                    (1, 2) => {
                        // Each input pixel twice, starting on its second copy when `first` is odd.
                        let last_x = (first + seg.len() - 1) / 2;
                        let (mut out, mut x) = (0, first / 2);
                        if first % 2 == 1 {
                            seg[0] = src[x];
                            (out, x) = (1, x + 1);
                        }
                        let mut pairs = seg[out..].chunks_exact_mut(2);
                        for (pair, &v) in (&mut pairs).zip(&src[x..]) {
                            pair[0] = v;
                            pair[1] = v;
                        }
                        if let [last] = pairs.into_remainder() {
                            *last = src[last_x];
                        }
                    }
                    _ => {
                        for (j, v) in seg.iter_mut().enumerate() {
                            *v = src[(first + j * self.stride) / self.up];
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::{max_diff, random};
    use candle_core::Module;

    fn candle(x: &Tensor, w: &Tensor, bias: &Tensor, stride: usize, padding: usize) -> Tensor {
        let config = candle_nn::Conv2dConfig {
            stride,
            padding,
            ..Default::default()
        };
        candle_nn::Conv2d::new(w.clone(), Some(bias.clone()), config)
            .forward(x)
            .expect("candle's conv2d runs")
    }

    #[test]
    fn matches_candle_on_the_shapes_the_models_use() {
        // (batch, c_in, h, w, c_out, kernel, stride, padding): 3x3 same, 1x1, strided downsampling
        // (padding 1 and, as the VAE encoder's, 0), odd sizes and more rows than one tile.
        let cases = [
            (2, 8, 9, 7, 6, 3, 1, 1),
            (1, 5, 33, 40, 7, 1, 1, 0),
            (2, 6, 16, 16, 4, 3, 2, 1),
            (1, 3, 17, 15, 5, 3, 2, 0),
            (1, 4, 70, 70, 3, 3, 1, 1),
        ];
        for (i, &(b, ci, h, w, co, k, s, p)) in cases.iter().enumerate() {
            let x = random(&[b, ci, h, w], i as u64);
            let weight = random(&[co, ci, k, k], 100 + i as u64);
            let bias = random(&[co], 200 + i as u64);
            let ours = conv2d(&x, &weight, Some(&bias), s, p).expect("the kernel runs");
            let theirs = candle(&x, &weight, &bias, s, p);
            let diff = max_diff(&ours, &theirs);
            assert!(diff < 1e-4, "case {i}: max difference {diff}");
            let plain = conv2d(&x, &weight, None, s, p).expect("the kernel runs");
            let unbiased = theirs
                .broadcast_sub(&bias.reshape((1, co, 1, 1)).unwrap())
                .unwrap();
            assert!(max_diff(&plain, &unbiased) < 1e-4, "case {i} without bias");
        }
    }

    #[test]
    fn upsampled_convolution_matches_candles_upsample_then_conv() {
        // (batch, c_in, h, w, c_out, kernel, padding): the upsamplers' 3x3 same, odd sizes, 1x1.
        let cases = [
            (2, 4, 5, 7, 3, 3, 1),
            (1, 3, 9, 130, 5, 3, 1),
            (1, 2, 6, 6, 4, 1, 0),
            (1, 3, 4, 5, 2, 3, 0),
        ];
        for (i, &(b, ci, h, w, co, k, p)) in cases.iter().enumerate() {
            let x = random(&[b, ci, h, w], 300 + i as u64);
            let weight = random(&[co, ci, k, k], 400 + i as u64);
            let bias = random(&[co], 500 + i as u64);
            let ours = conv2d_upsampled(&x, &weight, Some(&bias), p).expect("the kernel runs");
            let theirs = candle(&x.upsample_nearest2d(2 * h, 2 * w).unwrap(), &weight, &bias, 1, p);
            let diff = max_diff(&ours, &theirs);
            assert!(diff < 1e-4, "case {i}: max difference {diff}");
        }
    }

    #[test]
    fn addends_match_adding_after_the_convolution() {
        let (b, ci, co) = (2, 5, 6);
        let x = random(&[b, ci, 9, 8], 600);
        let weight = random(&[co, ci, 3, 3], 601);
        let bias = random(&[co], 602);
        let per_channel = random(&[b, co], 603);
        let residual = random(&[b, co, 9, 8], 604);
        let addends = Addends {
            per_channel: Some(&per_channel),
            residual: Some(&residual),
        };
        let ours = conv2d_add(&x, &weight, Some(&bias), addends, 1, 1).expect("the kernel runs");
        let want = candle(&x, &weight, &bias, 1, 1)
            .broadcast_add(&per_channel.reshape((b, co, 1, 1)).unwrap())
            .unwrap()
            .add(&residual)
            .unwrap();
        assert!(max_diff(&ours, &want) < 1e-4);
        let only_residual = Addends {
            residual: Some(&residual),
            ..Default::default()
        };
        let ours = conv2d_add(&x, &weight, None, only_residual, 1, 1).expect("the kernel runs");
        let plain = conv2d(&x, &weight, None, 1, 1).unwrap();
        assert!(max_diff(&ours, &(plain + &residual).unwrap()) < 1e-4);
        let wrong = random(&[b, co, 9, 7], 605);
        let bad = Addends {
            residual: Some(&wrong),
            ..Default::default()
        };
        assert!(conv2d_add(&x, &weight, None, bad, 1, 1).is_err());
    }

    #[test]
    fn a_mismatched_weight_is_an_error() {
        let x = random(&[1, 3, 8, 8], 1);
        let weight = random(&[4, 5, 3, 3], 2);
        let err = conv2d(&x, &weight, None, 1, 1).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }
}
