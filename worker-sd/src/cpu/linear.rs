//! Linear layers as one GEMM over every row: `x w^T + bias`, the bias (and, where a residual connection
//! follows, the residual) written into the output first and the product added onto it, so neither the
//! bias nor the residual costs a pass of its own. Candle's `Linear` runs one GEMM per batch entry on a
//! broadcast weight, then adds the bias in a second pass over a new tensor.
//!
//! The input may be strided (`x_strides`): a 1x1 convolution's NCHW input is read as `(pixels, channels)`
//! rows without a transpose, and [`linear_to_nchw`] writes its output straight into NCHW.

use candle_core::{Result, Tensor};

use super::{gemm, threads, with_slice};

/// `x w^T + bias (+ residual)` for float32 CPU tensors: `x` `(..., k)`, `weight` `(n, k)`, `bias` `(n)`,
/// `residual` the output's shape `(..., n)`.
pub fn linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let (n, k) = weight.dims2()?;
    let mut dims = x.dims().to_vec();
    if dims.last() != Some(&k) {
        candle_core::bail!("linear: input {dims:?} does not fit weight ({n}, {k})");
    }
    let rows = x.elem_count() / k.max(1);
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    let out = with_slice(&x, |xs| {
        // SAFETY: rows x k elements at row stride k, column stride 1.
        unsafe {
            product(
                (rows, n, k),
                (xs.as_ptr(), k, 1),
                weight,
                bias,
                residual,
                &dims,
                false,
            )
        }
    })??;
    Tensor::from_vec(out, dims, x.device())
}

/// A 1x1 convolution's product from channels-last rows: `x` `(b, pixels, k)` times `weight` `(n, k)` (or
/// `(n, k, 1, 1)`), plus `bias` and `residual` `(b, n, h, w)`, written as NCHW `(b, n, h, w)`.
pub fn linear_to_nchw(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    (h, w): (usize, usize),
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let weight = weight.flatten_from(1)?;
    let (n, k) = weight.dims2()?;
    let (b, pixels, kx) = x.dims3()?;
    if kx != k || pixels != h * w {
        candle_core::bail!(
            "linear_to_nchw: input {:?} does not fit weight ({n}, {k}) at {h}x{w}",
            x.dims()
        );
    }
    let dims = [b, n, h, w];
    let out = with_slice(&x, |xs| {
        // SAFETY: b * pixels rows of k at row stride k.
        unsafe {
            product(
                (b * pixels, n, k),
                (xs.as_ptr(), k, 1),
                &weight,
                bias,
                residual,
                &dims,
                true,
            )
        }
    })??;
    Tensor::from_vec(out, &dims[..], x.device())
}

/// A 1x1 convolution's product read from NCHW: `x` `(b, k, h, w)` times `weight` `(n, k, 1, 1)` (or
/// `(n, k)`), plus `bias`, written channels-last as `(b, h * w, n)`.
pub fn nchw_to_linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let x = x.contiguous()?;
    let weight = weight.flatten_from(1)?;
    let (n, k) = weight.dims2()?;
    let (b, kx, h, w) = x.dims4()?;
    if kx != k {
        candle_core::bail!(
            "nchw_to_linear: input {:?} does not fit weight ({n}, {k})",
            x.dims()
        );
    }
    let pixels = h * w;
    let dims = [b, pixels, n];
    let mut out = initial(b * pixels, n, bias, None, &dims, false)?;
    let read_dst = bias.is_some();
    with_slice(&x, |xs| {
        with_slice(&weight.contiguous()?, |ws| {
            for bi in 0..b {
                // SAFETY: image bi's pixels are rows at stride 1, its channels columns at stride `pixels`;
                // its output rows are pixels x n at row stride n.
                unsafe {
                    gemm(
                        (pixels, n, k),
                        (out[bi * pixels * n..].as_mut_ptr(), n, 1),
                        (xs[bi * k * pixels..].as_ptr(), 1, pixels),
                        (ws.as_ptr(), 1, k),
                        read_dst,
                        1.0,
                        threads() > 1,
                    )
                }
            }
            Ok::<_, candle_core::Error>(())
        })
    })???;
    Tensor::from_vec(out, &dims[..], x.device())
}

/// The output buffer before the product: zeros, or the bias per column, plus the residual.
/// `nchw`: the output (rows = b * pixels, columns = channels) is stored as `dims` = `(b, n, h, w)`.
fn initial(
    rows: usize,
    n: usize,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    dims: &[usize],
    nchw: bool,
) -> Result<Vec<f32>> {
    let mut out = match residual {
        Some(r) => {
            if r.dims() != dims {
                candle_core::bail!(
                    "linear: residual {:?} is not the output's shape {dims:?}",
                    r.dims()
                );
            }
            with_slice(&r.contiguous()?, |r| r.to_vec())?
        }
        None => vec![0f32; rows * n],
    };
    if let Some(bias) = bias {
        if bias.elem_count() != n {
            candle_core::bail!("linear: bias of {} for {n} outputs", bias.elem_count());
        }
        with_slice(&bias.contiguous()?, |bias| {
            if nchw {
                let plane = rows / dims[0].max(1);
                for (i, p) in out.chunks_exact_mut(plane.max(1)).enumerate() {
                    let v = bias[i % n];
                    p.iter_mut().for_each(|o| *o += v);
                }
            } else {
                for row in out.chunks_exact_mut(n) {
                    row.iter_mut().zip(bias).for_each(|(o, b)| *o += b);
                }
            }
        })?;
    }
    Ok(out)
}

/// `lhs (rows x k) * weight^T + bias (+ residual)`, the output row-major `(rows, n)` or, when `nchw`, as
/// `dims` = `(b, n, h, w)` with rows = b * h * w.
///
/// # Safety
/// `lhs` must address rows x k elements at its (row, column) strides.
unsafe fn product(
    (rows, n, k): (usize, usize, usize),
    lhs: (*const f32, usize, usize),
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    dims: &[usize],
    nchw: bool,
) -> Result<Vec<f32>> {
    let mut out = initial(rows, n, bias, residual, dims, nchw)?;
    let read_dst = bias.is_some() || residual.is_some();
    with_slice(&weight.contiguous()?, |ws| {
        if nchw {
            let (b, pixels) = (dims[0], rows / dims[0].max(1));
            for bi in 0..b {
                // SAFETY: image bi's output is n x pixels (NCHW plane per channel); its input rows follow.
                unsafe {
                    gemm(
                        (pixels, n, k),
                        (out[bi * n * pixels..].as_mut_ptr(), 1, pixels),
                        (lhs.0.add(bi * pixels * lhs.1), lhs.1, lhs.2),
                        (ws.as_ptr(), 1, k),
                        read_dst,
                        1.0,
                        threads() > 1,
                    )
                }
            }
        } else {
            // SAFETY: forwarded to the caller; out is rows x n.
            unsafe {
                gemm(
                    (rows, n, k),
                    (out.as_mut_ptr(), n, 1),
                    lhs,
                    (ws.as_ptr(), 1, k),
                    read_dst,
                    1.0,
                    threads() > 1,
                )
            }
        }
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::{max_diff, random};
    use candle_core::Module;

    #[test]
    fn linear_matches_candles_linear_plus_residual() {
        let x = random(&[2, 301, 24], 1);
        let w = random(&[40, 24], 2);
        let bias = random(&[40], 3);
        let residual = random(&[2, 301, 40], 4);
        let candle = candle_nn::Linear::new(w.clone(), Some(bias.clone()));
        let want = candle.forward(&x).unwrap();
        let ours = linear(&x, &w, Some(&bias), None).unwrap();
        assert!(max_diff(&ours, &want) < 1e-5);
        let ours = linear(&x, &w, Some(&bias), Some(&residual)).unwrap();
        assert!(max_diff(&ours, &(&want + &residual).unwrap()) < 1e-5);
        let plain = candle_nn::Linear::new(w.clone(), None).forward(&x).unwrap();
        assert!(max_diff(&linear(&x, &w, None, None).unwrap(), &plain) < 1e-5);
        assert!(linear(&x, &random(&[40, 23], 5), None, None).is_err());
        assert!(linear(&x, &w, None, Some(&random(&[2, 301, 39], 6))).is_err());
    }

    #[test]
    fn one_by_one_projections_match_candles_transposes() {
        // A spatial transformer's proj_in (NCHW in, rows out) and proj_out (rows in, NCHW out + residual).
        let (b, c, h, w, n) = (2, 12, 5, 7, 20);
        let x = random(&[b, c, h, w], 7);
        let w_in = random(&[n, c, 1, 1], 8);
        let b_in = random(&[n], 9);
        let conv = candle_nn::Conv2d::new(w_in.clone(), Some(b_in.clone()), Default::default());
        let want = conv
            .forward(&x)
            .unwrap()
            .flatten_from(2)
            .unwrap()
            .transpose(1, 2)
            .unwrap();
        let rows = nchw_to_linear(&x, &w_in, Some(&b_in)).unwrap();
        assert!(max_diff(&rows, &want.contiguous().unwrap()) < 1e-5);

        let w_out = random(&[c, n], 10);
        let b_out = random(&[c], 11);
        let residual = random(&[b, c, h, w], 12);
        let lin = candle_nn::Linear::new(w_out.clone(), Some(b_out.clone()));
        let want = (lin
            .forward(&rows)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, c, h, w))
            .unwrap()
            + &residual)
            .unwrap();
        let ours = linear_to_nchw(&rows, &w_out, Some(&b_out), Some(&residual), (h, w)).unwrap();
        assert!(max_diff(&ours, &want) < 1e-5);
        assert!(linear_to_nchw(&rows, &w_out, None, None, (h, w + 1)).is_err());
    }
}
