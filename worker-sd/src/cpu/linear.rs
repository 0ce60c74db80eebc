//! Linear layers as one GEMM over every row: `x w^T + bias`, the bias (and, where a residual connection
//! follows, the residual) written into the output first and the product added onto it, so neither the
//! bias nor the residual costs a pass of its own. Candle's `Linear` runs one GEMM per batch entry on a
//! broadcast weight, then adds the bias in a second pass over a new tensor.
//!
//! The input may be a narrow of a wider tensor's last dimension (read in place), or several such parts
//! standing for their concatenation ([`linear_of_parts`]); a 1x1 convolution's NCHW input is read as
//! `(pixels, channels)` rows without a transpose, and [`linear_to_nchw`] writes its output straight into NCHW.
//! The output's first write (bias, residual) is split over the threads: on a fresh buffer it is also where
//! the page faults happen.

use candle_core::{Result, Storage, Tensor};
use rayon::prelude::*;

use super::{gemm, threads, with_rows, with_slice};

/// `x w^T + bias (+ residual)` for float32 CPU tensors: `x` `(..., k)`, `weight` `(n, k)`, `bias` `(n)`,
/// `residual` the output's shape `(..., n)`. `x` may be a narrow of a wider tensor's last dimension.
pub fn linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    linear_of_parts(&[x], weight, bias, residual)
}

/// `cat(parts, -1) w^T + bias (+ residual)` without the concatenation: each part times its own columns of
/// `weight`, summed into one output (Flux's single blocks project attention and MLP together).
pub fn linear_of_parts(
    parts: &[&Tensor],
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    linear_then(parts, weight, bias, residual, None::<fn(usize, &mut [f32])>)
}

/// [`linear_of_parts`], then `then(row, values)` on every output row in place, the rows split over the
/// threads: an activation or a gated residual applied to the product's own fresh buffer, where a separate
/// op would allocate (and page-fault) a second output and read the first again.
pub fn linear_then(
    parts: &[&Tensor],
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    then: Option<impl Fn(usize, &mut [f32]) + Sync>,
) -> Result<Tensor> {
    let (n, k) = weight.dims2()?;
    let Some(first) = parts.first() else {
        candle_core::bail!("linear: no input")
    };
    let lead = &first.dims()[..first.rank().saturating_sub(1)];
    let widths: Vec<usize> = parts
        .iter()
        .map(|p| p.dims().last().copied().unwrap_or(0))
        .collect();
    if widths.iter().sum::<usize>() != k
        || parts
            .iter()
            .any(|p| p.rank() == 0 || &p.dims()[..p.rank() - 1] != lead)
    {
        let shapes: Vec<_> = parts.iter().map(|p| p.dims().to_vec()).collect();
        candle_core::bail!("linear: inputs {shapes:?} do not fit weight ({n}, {k})");
    }
    let rows = lead.iter().product::<usize>();
    let mut dims = lead.to_vec();
    dims.push(n);
    let mut out = initial(rows, n, bias, residual, &dims, false)?;
    let mut read_dst = bias.is_some() || residual.is_some();
    let mut offset = 0;
    with_weight(weight, |ws, (n_stride, k_stride)| {
        for (part, &width) in parts.iter().zip(&widths) {
            with_rows(part, |xs, row_stride| {
                // SAFETY: `with_rows` gives rows x width elements at row stride `row_stride`; the weight's
                // columns offset..offset + width of its n rows of k at its strides; out is rows x n.
                unsafe {
                    gemm(
                        (rows, n, width),
                        (out.as_mut_ptr(), n, 1),
                        (xs.as_ptr(), row_stride, 1),
                        (ws[offset * k_stride..].as_ptr(), k_stride, n_stride),
                        read_dst,
                        1.0,
                        threads() > 1,
                    )
                }
            })?;
            read_dst = true;
            offset += width;
        }
        Ok::<_, candle_core::Error>(())
    })??;
    if let Some(then) = then {
        let rows_per_item = ((1 << 14) / n.max(1)).max(1);
        out.par_chunks_mut(rows_per_item * n.max(1))
            .enumerate()
            .for_each(|(item, chunk)| {
                for (r, row) in chunk.chunks_exact_mut(n.max(1)).enumerate() {
                    then(item * rows_per_item + r, row);
                }
            });
    }
    Tensor::from_vec(out, dims, first.device())
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
            product_nchw(
                (b * pixels, n, k),
                (xs.as_ptr(), k, 1),
                &weight,
                bias,
                residual,
                &dims,
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
        with_weight(&weight, |ws, (n_stride, k_stride)| {
            for bi in 0..b {
                // SAFETY: image bi's pixels are rows at stride 1, its channels columns at stride `pixels`;
                // its output rows are pixels x n at row stride n.
                unsafe {
                    gemm(
                        (pixels, n, k),
                        (out[bi * pixels * n..].as_mut_ptr(), n, 1),
                        (xs[bi * k * pixels..].as_ptr(), 1, pixels),
                        (ws.as_ptr(), k_stride, n_stride),
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
    if let Some(r) = residual
        && r.dims() != dims
    {
        candle_core::bail!(
            "linear: residual {:?} is not the output's shape {dims:?}",
            r.dims()
        );
    }
    if let Some(bias) = bias
        && bias.elem_count() != n
    {
        candle_core::bail!("linear: bias of {} for {n} outputs", bias.elem_count());
    }
    let residual = residual.map(|r| r.contiguous()).transpose()?;
    let bias = bias.map(|b| b.contiguous()).transpose()?;
    let mut out = Vec::<f32>::with_capacity(rows * n);
    let spare = &mut out.spare_capacity_mut()[..rows * n];
    // Runs of output elements that share one bias value (NCHW planes) or one bias row (row-major).
    let (run, runs_per_item) = match nchw {
        true => (rows / dims.first().copied().unwrap_or(1).max(1), 1),
        false => (n, (1 << 14) / n.max(1) + 1),
    };
    let chunk = (run * runs_per_item).max(1);
    let mut fill = |r: Option<&[f32]>, b: Option<&[f32]>| {
        spare.par_chunks_mut(chunk).enumerate().for_each(|(item, part)| {
            for (i, row) in part.chunks_mut(run.max(1)).enumerate() {
                let at = item * chunk + i * run;
                let r = r.map(|r| &r[at..at + row.len()]);
                for (j, o) in row.iter_mut().enumerate() {
                    let bias = match (b, nchw) {
                        (Some(b), true) => b[(at / run) % n],
                        (Some(b), false) => b[j],
                        (None, _) => 0.0,
                    };
                    o.write(r.map_or(0.0, |r| r[j]) + bias);
                }
            }
        })
    };
    match (&residual, &bias) {
        (Some(r), Some(b)) => with_slice(r, |r| with_slice(b, |b| fill(Some(r), Some(b))))??,
        (Some(r), None) => with_slice(r, |r| fill(Some(r), None))?,
        (None, Some(b)) => with_slice(b, |b| fill(None, Some(b)))?,
        (None, None) => fill(None, None),
    }
    // SAFETY: every one of the rows * n elements was written above.
    unsafe { out.set_len(rows * n) };
    Ok(out)
}

/// `lhs (rows x k) * weight^T + bias (+ residual)`, written as `dims` = `(b, n, h, w)` with rows = b * h * w.
///
/// # Safety
/// `lhs` must address rows x k elements at its (row, column) strides.
unsafe fn product_nchw(
    (rows, n, k): (usize, usize, usize),
    lhs: (*const f32, usize, usize),
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    dims: &[usize],
) -> Result<Vec<f32>> {
    let mut out = initial(rows, n, bias, residual, dims, true)?;
    let read_dst = bias.is_some() || residual.is_some();
    with_weight(weight, |ws, (n_stride, k_stride)| {
        let (b, pixels) = (dims[0], rows / dims[0].max(1));
        for bi in 0..b {
            // SAFETY: image bi's output is n x pixels (NCHW plane per channel); its input rows follow.
            unsafe {
                gemm(
                    (pixels, n, k),
                    (out[bi * n * pixels..].as_mut_ptr(), 1, pixels),
                    (lhs.0.add(bi * pixels * lhs.1), lhs.1, lhs.2),
                    (ws.as_ptr(), k_stride, n_stride),
                    read_dst,
                    1.0,
                    threads() > 1,
                )
            }
        }
    })?;
    Ok(out)
}

/// A linear weight `(n, k)` stored column-major (`w^T` contiguous; same shape, same values) when it is a
/// contiguous float32 CPU matrix, else unchanged. The GEMM packs the weight in panels across its `n` rows:
/// from the file's row-major layout each panel reads one element from each of dozens of rows `4 k` bytes
/// apart, from this layout one contiguous run. Measured with the `gemm` crate's AVX-512 kernels on 2
/// threads (Zen 5): the text encoders' 77-row products 2.5-4x faster (77x768x3072: 58 to 210-266
/// GFLOP/s), the UNet's and Flux's 1536-row products about 7%.
pub fn column_major(weight: Tensor) -> Result<Tensor> {
    if !super::applies(&weight) || weight.rank() != 2 || !weight.is_contiguous() {
        return Ok(weight);
    }
    // A transpose by 16x16 tiles through a local array, each output row written in runs of 16 (Candle's
    // strided copy reads element by element down the columns: SD 1.5's linear weights took 9 s that way,
    // against a 2 s load; this runs at 2-3 GB/s on 2 threads here, page faults of the new buffer included).
    const TILE: usize = 16;
    let (n, k) = weight.dims2()?;
    let transposed = with_slice(&weight, |w| {
        let mut out = Vec::<f32>::with_capacity(n * k);
        let spare = &mut out.spare_capacity_mut()[..n * k];
        spare
            .par_chunks_mut(TILE * n.max(1))
            .enumerate()
            .for_each(|(block, rows)| {
                let (k0, kb) = (block * TILE, rows.len() / n.max(1));
                let mut tile = [[0f32; TILE]; TILE];
                for j0 in (0..n).step_by(TILE) {
                    let jb = TILE.min(n - j0);
                    for (jj, column) in (j0..j0 + jb).enumerate() {
                        for (i, &v) in w[column * k + k0..][..kb].iter().enumerate() {
                            tile[i][jj] = v;
                        }
                    }
                    for (i, tile_row) in tile.iter().enumerate().take(kb) {
                        for (o, &v) in rows[i * n + j0..][..jb].iter_mut().zip(tile_row) {
                            o.write(v);
                        }
                    }
                }
            });
        // SAFETY: every one of the n * k elements was written above (each row block's kb x n tiles).
        unsafe { out.set_len(n * k) };
        out
    })?;
    Tensor::from_vec(transposed, (k, n), weight.device())?.t()
}

/// A component's tensor as a pipeline keeps it on the CPU: linear weights [`column_major`], embedding
/// tables (`*embedding.weight`, looked up by row) as they are.
pub fn kept_layout(name: &str, tensor: Tensor) -> Result<Tensor> {
    match name.ends_with("embedding.weight") {
        true => Ok(tensor),
        false => column_major(tensor),
    }
}

/// Whether `t` is a matrix laid out by [`column_major`] (a LoRA merge keeps that layout).
pub fn is_column_major(t: &Tensor) -> bool {
    matches!(*t.dims(), [n, k] if n > 1 && k > 1 && t.stride() == [1, n])
}

/// Calls `f` with a weight `(n, k)`'s float32 elements and its strides (over `n`, over `k`), read in place
/// when it is row-major (the file's layout) or column-major ([`column_major`]), else from a row-major copy.
fn with_weight<R>(weight: &Tensor, f: impl FnOnce(&[f32], (usize, usize)) -> R) -> Result<R> {
    let (n, k) = weight.dims2()?;
    if !is_column_major(weight) {
        return with_slice(&weight.contiguous()?, |ws| f(ws, (k, 1)));
    }
    let (storage, layout) = weight.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("the CPU kernels take CPU tensors")
    };
    let data = cpu.as_slice::<f32>()?;
    let start = layout.start_offset();
    let Some(ws) = data.get(start..start + n * k) else {
        candle_core::bail!("linear: weight ({n}, {k}) outside its storage")
    };
    Ok(f(ws, (1, n)))
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
    fn parts_read_in_place_stand_for_their_concatenation() {
        // One part a narrow of a wider tensor's last dimension (rows strided), one contiguous; then an
        // in-place step that sees each row's index.
        let wide = random(&[2, 30, 40], 13);
        let a = wide.narrow(2, 5, 10).unwrap();
        let b = random(&[2, 30, 14], 14);
        let w = random(&[16, 24], 15);
        let bias = random(&[16], 16);
        let cat = Tensor::cat(&[&a, &b], 2).unwrap();
        let want = candle_nn::Linear::new(w.clone(), Some(bias.clone()))
            .forward(&cat)
            .unwrap();
        let ours = linear_of_parts(&[&a, &b], &w, Some(&bias), None).unwrap();
        assert!(max_diff(&ours, &want) < 1e-5);
        assert!(
            max_diff(&linear(&a, &w.narrow(1, 0, 10).unwrap(), None, None).unwrap(), &{
                candle_nn::Linear::new(w.narrow(1, 0, 10).unwrap(), None)
                    .forward(&a.contiguous().unwrap())
                    .unwrap()
            }) < 1e-5
        );
        let then = |r: usize, row: &mut [f32]| row.iter_mut().for_each(|v| *v = *v * 2.0 + r as f32);
        let ours = linear_then(&[&a, &b], &w, Some(&bias), None, Some(then)).unwrap();
        let rows = Tensor::arange(0f32, 60.0, &candle_core::Device::Cpu)
            .unwrap()
            .reshape((2, 30, 1))
            .unwrap();
        let want = ((want * 2.0).unwrap().broadcast_add(&rows)).unwrap();
        assert!(max_diff(&ours, &want) < 1e-4);
        assert!(linear_of_parts(&[&a, &b.narrow(2, 0, 13).unwrap()], &w, None, None).is_err());
        assert!(linear_of_parts(&[&a, &random(&[2, 29, 14], 17)], &w, None, None).is_err());
        assert!(linear_of_parts(&[], &w, None, None).is_err());
    }

    #[test]
    fn column_major_weights_give_the_row_major_products() {
        let w = random(&[40, 24], 21);
        let cm = column_major(w.clone()).unwrap();
        assert_eq!((cm.dims(), cm.stride()), (&[40, 24][..], &[1, 40][..]));
        assert!(is_column_major(&cm) && !is_column_major(&w));
        assert_eq!(max_diff(&cm, &w), 0.0);
        // Already laid out, a vector and a narrow view are left as they are.
        assert_eq!(column_major(cm.clone()).unwrap().stride(), &[1, 40]);
        assert_eq!(column_major(random(&[7], 22)).unwrap().stride(), &[1]);
        assert_eq!(
            column_major(w.narrow(1, 2, 5).unwrap()).unwrap().stride(),
            &[24, 1]
        );
        let kept = |name: &str| kept_layout(name, w.clone()).unwrap().stride().to_vec();
        assert_eq!(kept("text_model.embeddings.token_embedding.weight"), [24, 1]);
        assert_eq!(kept("text_model.encoder.layers.0.mlp.fc1.weight"), [1, 40]);
        // Every kernel reads it in place: rows, parts at a column offset, NCHW in and out; and Candle's
        // own `Linear` takes it too (GPU-less paths, the Flux CLIP).
        let (x, bias, residual) = (
            random(&[2, 77, 24], 23),
            random(&[40], 24),
            random(&[2, 77, 40], 25),
        );
        let want = linear(&x, &w, Some(&bias), Some(&residual)).unwrap();
        assert!(max_diff(&linear(&x, &cm, Some(&bias), Some(&residual)).unwrap(), &want) < 1e-5);
        let candle = candle_nn::Linear::new(cm.clone(), Some(bias.clone()))
            .forward(&x)
            .unwrap();
        assert!(max_diff(&(candle + &residual).unwrap(), &want) < 1e-5);
        let (a, b) = (x.narrow(2, 0, 10).unwrap(), x.narrow(2, 10, 14).unwrap());
        let parts = linear_of_parts(&[&a, &b], &cm, Some(&bias), Some(&residual)).unwrap();
        assert!(max_diff(&parts, &want) < 1e-5);
        let image = random(&[2, 24, 7, 11], 26);
        let rows = nchw_to_linear(&image, &cm, Some(&bias)).unwrap();
        assert!(max_diff(&rows, &nchw_to_linear(&image, &w, Some(&bias)).unwrap()) < 1e-5);
        let back = (random(&[24, 40], 27), random(&[2, 24, 7, 11], 28));
        let cm_back = column_major(back.0.clone()).unwrap();
        let want = linear_to_nchw(&rows, &back.0, None, Some(&back.1), (7, 11)).unwrap();
        let ours = linear_to_nchw(&rows, &cm_back, None, Some(&back.1), (7, 11)).unwrap();
        assert!(max_diff(&ours, &want) < 1e-5);
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
