//! The decoder's forward pass on Candle's tensor ops, on whatever device the model is on (CUDA,
//! Metal, or the CPU for GGML types the crate's own blocks lack). Batched like the CPU path: one step
//! runs every sequence's chunk, keys and values go to a paged f16 cache on the device laid out as the
//! engine's [`KvPool`] blocks (the pool keeps the bookkeeping: which block is whose, prefix reuse).

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};

use super::cpu::{logit_rows, step_rows, step_tables};
use super::{Activation, Backend, Decoder, Norm, NormKind, RopeStyle};
use crate::batch::kv_cache::{BLOCK_TOKENS, KvPool};
use crate::batch::{BatchLm, Chunk};
use crate::cpu::ops::{Heads, Rope};
use crate::error::{LlmError, Result};
use crate::files::ModelMeta;

/// Candle tensors on a device as a decoder backend.
pub(crate) struct Dev;

/// One weight of a projection.
enum Part {
    /// GGML blocks, multiplied by Candle's quantized kernels.
    Quantized(QMatMul),
    /// A dense (rows, cols) matrix in the device's dtype.
    Dense(Tensor),
}

/// A projection on the device: one or more weights stacked by output rows.
pub(crate) struct DevLinear {
    parts: Vec<Part>,
    rows: usize,
    cols: usize,
}

impl DevLinear {
    /// Quantized parts, each with its (rows, cols).
    pub(crate) fn quantized(parts: Vec<(QMatMul, usize, usize)>) -> DevLinear {
        let cols = parts.first().map_or(0, |p| p.2);
        let cols = match parts.iter().all(|p| p.2 == cols) {
            true => cols,
            false => 0,
        };
        DevLinear {
            rows: parts.iter().map(|p| p.1).sum(),
            cols,
            parts: parts.into_iter().map(|p| Part::Quantized(p.0)).collect(),
        }
    }

    /// One dense (rows, cols) matrix.
    pub(crate) fn dense(w: Tensor) -> Result<DevLinear> {
        let (rows, cols) = w.dims2()?;
        Ok(DevLinear {
            parts: vec![Part::Dense(w)],
            rows,
            cols,
        })
    }

    /// `x W^T` for f32 rows `x` (m, cols), as f32 (m, rows).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut outs = Vec::with_capacity(self.parts.len());
        for part in &self.parts {
            outs.push(match part {
                Part::Quantized(q) => q.forward(x)?,
                Part::Dense(w) => x.to_dtype(w.dtype())?.matmul(&w.t()?)?.to_dtype(DType::F32)?,
            });
        }
        Ok(match outs.len() {
            1 => outs.remove(0),
            _ => Tensor::cat(&outs, 1)?,
        })
    }
}

/// The token embedding on the device: an f32 table to look rows up in, and the same weights as a
/// projection for a tied output head.
pub(crate) struct DevTable {
    pub(crate) lookup: Tensor,
    pub(crate) head: DevLinear,
}

impl Backend for Dev {
    type Linear = DevLinear;
    type Table = DevTable;
    type Vector = Tensor;

    fn linear_shape(l: &DevLinear) -> (usize, usize) {
        (l.rows, l.cols)
    }

    fn table_shape(t: &DevTable) -> (usize, usize) {
        t.lookup.dims2().unwrap_or((0, 0))
    }

    fn vector_len(v: &Tensor) -> usize {
        v.elem_count()
    }
}

/// A decoder on Candle's ops with its device-side cache.
pub(crate) struct DeviceDecoder {
    model: Decoder<Dev>,
    device: Device,
    /// Per layer, keys and values: (pool blocks * BLOCK_TOKENS, kv width) f16, made on first use.
    cache: Vec<(Tensor, Tensor)>,
}

impl DeviceDecoder {
    /// The decoder with its weights on `device`.
    pub(crate) fn new(model: Decoder<Dev>, device: &Device) -> Self {
        DeviceDecoder {
            model,
            device: device.clone(),
            cache: Vec::new(),
        }
    }

    fn norm(&self, norm: &Norm<Tensor>, x: &Tensor) -> Result<Tensor> {
        let eps = self.model.hyper.eps;
        Ok(match (self.model.spec.norm, &norm.bias) {
            (NormKind::Layer, Some(bias)) => candle_nn::ops::layer_norm(x, &norm.weight, bias, eps)?,
            _ => candle_nn::ops::rms_norm(x, &norm.weight, eps)?,
        })
    }

    /// Rotary embedding of (heads, rows, dim) on its first `2 * half` dimensions.
    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let dim = x.dim(2)?;
        let rotated = 2 * cos.dim(1)?;
        let x = x.unsqueeze(0)?;
        let head = x.narrow(3, 0, rotated)?.contiguous()?;
        let turned = match self.model.spec.rope {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&head, cos, sin)?,
            RopeStyle::Neox => candle_nn::rotary_emb::rope(&head, cos, sin)?,
        };
        let out = match rotated < dim {
            true => Tensor::cat(&[turned, x.narrow(3, rotated, dim - rotated)?], 3)?,
            false => turned,
        };
        Ok(out.squeeze(0)?)
    }

    /// cos and sin (rows, pairs) of the step's positions.
    fn tables(&self, rope: &Rope, chunks: &[Chunk]) -> Result<(Tensor, Tensor)> {
        let (cos, sin) = step_tables(rope, chunks);
        let shape = (cos.len() / rope.pairs().max(1), rope.pairs());
        Ok((
            Tensor::from_vec(cos, shape, &self.device)?,
            Tensor::from_vec(sin, shape, &self.device)?,
        ))
    }
}

/// Keys visible to each of `t` queries at `start..start + t` among positions `0..start + t`: 0 or -inf.
fn mask(start: usize, t: usize, window: Option<usize>, device: &Device) -> Result<Tensor> {
    let len = start + t;
    let mut m = vec![0f32; t * len];
    for i in 0..t {
        let pos = start + i;
        for (j, v) in m[i * len..(i + 1) * len].iter_mut().enumerate() {
            if j > pos || window.is_some_and(|w| j + w <= pos) {
                *v = f32::NEG_INFINITY;
            }
        }
    }
    Ok(Tensor::from_vec(m, (t, len), device)?)
}

impl BatchLm for DeviceDecoder {
    fn forward_batch(&mut self, chunks: &[Chunk], pool: &mut KvPool) -> Result<Vec<Vec<f32>>> {
        let (vocab, width) = Dev::table_shape(&self.model.w.embedding);
        let Heads { q: nq, kv: nkv, dim } = self.model.hyper.heads;
        let (q_width, kv_width, group) = (nq * dim, nkv * dim, nq / nkv);
        if pool.kv_width() != kv_width {
            return Err(LlmError::Internal(format!(
                "a cache of {} values per position for a model of {kv_width}",
                pool.kv_width()
            )));
        }
        let slots_in_pool = pool.capacity() * BLOCK_TOKENS;
        if self
            .cache
            .first()
            .is_none_or(|(k, _)| k.dim(0).ok() != Some(slots_in_pool))
        {
            let zeros = || Tensor::zeros((slots_in_pool, kv_width), DType::F16, &self.device);
            self.cache = (0..self.model.w.layers.len())
                .map(|_| Ok((zeros()?, zeros()?)))
                .collect::<Result<_>>()?;
        }
        let (rows, tokens) = step_rows(chunks, vocab)?;
        let m = tokens.len();
        let slot = |blocks: &[usize], pos: usize| {
            (blocks[pos / BLOCK_TOKENS] * BLOCK_TOKENS + pos % BLOCK_TOKENS) as u32
        };
        let row_slots: Vec<u32> = rows.iter().map(|r| slot(r.blocks, r.pos)).collect();
        let row_slots = Tensor::new(row_slots, &self.device)?
            .unsqueeze(1)?
            .broadcast_as((m, kv_width))?
            .contiguous()?;
        let spec = self.model.spec;
        let hyper = &self.model.hyper;

        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.model.w.embedding.lookup.index_select(&ids, 0)?;
        if spec.embed_scale {
            x = (x * (width as f64).sqrt())?;
        }
        let global = self.tables(&hyper.rope, chunks)?;
        let local = match &hyper.local_rope {
            Some(r) => Some(self.tables(r, chunks)?),
            None => None,
        };
        // Per chunk: the cache slots of all its positions, and its attention mask for each window the
        // layers use (made once per step, not once per layer: on a GPU each is an upload).
        let mut seen = Vec::with_capacity(chunks.len());
        for c in chunks {
            let len = c.start + c.tokens.len();
            let slots: Vec<u32> = (0..len).map(|p| slot(c.blocks, p)).collect();
            seen.push(Tensor::new(slots, &self.device)?);
        }
        let mut windows: Vec<Option<usize>> = self.model.w.layers.iter().map(|l| l.window).collect();
        windows.sort_unstable();
        windows.dedup();
        let mut masks = std::collections::HashMap::new();
        for window in windows {
            let per_chunk = chunks
                .iter()
                .map(|c| mask(c.start, c.tokens.len(), window, &self.device))
                .collect::<Result<Vec<_>>>()?;
            masks.insert(window, per_chunk);
        }

        for (l, layer) in self.model.w.layers.iter().enumerate() {
            let h = self.norm(&layer.attn_norm, &x)?;
            let mut qkv = layer.qkv.forward(&h)?;
            if let Some(bias) = &layer.qkv_bias {
                qkv = qkv.broadcast_add(bias)?;
            }
            let mut q = qkv.narrow(1, 0, q_width)?.reshape((m, nq, dim))?;
            let mut k = qkv.narrow(1, q_width, kv_width)?.reshape((m, nkv, dim))?;
            let v = qkv.narrow(1, q_width + kv_width, kv_width)?.contiguous()?;
            if let (Some(q_norm), Some(k_norm)) = (&layer.q_norm, &layer.k_norm) {
                q = candle_nn::ops::rms_norm(&q.contiguous()?, q_norm, hyper.eps)?;
                k = candle_nn::ops::rms_norm(&k.contiguous()?, k_norm, hyper.eps)?;
            }
            let (cos, sin) = match (&local, layer.window) {
                (Some(local), Some(_)) => local,
                _ => &global,
            };
            let q = self.rope(&q.transpose(0, 1)?.contiguous()?, cos, sin)?;
            let k = self.rope(&k.transpose(0, 1)?.contiguous()?, cos, sin)?;
            let k_rows = k.transpose(0, 1)?.reshape((m, kv_width))?.to_dtype(DType::F16)?;
            let (keys, values) = &self.cache[l];
            keys.scatter_set(&row_slots, &k_rows, 0)?;
            values.scatter_set(&row_slots, &v.to_dtype(DType::F16)?, 0)?;

            let mut outs = Vec::with_capacity(chunks.len());
            let mut r0 = 0;
            let layer_masks = &masks[&layer.window];
            for ((c, slots), chunk_mask) in chunks.iter().zip(&seen).zip(layer_masks) {
                let t = c.tokens.len();
                let len = c.start + t;
                let gather = |cache: &Tensor| -> Result<Tensor> {
                    Ok(cache
                        .index_select(slots, 0)?
                        .to_dtype(DType::F32)?
                        .reshape((len, nkv, dim))?
                        .transpose(0, 1)?
                        .contiguous()?)
                };
                let (ks, vs) = (gather(keys)?, gather(values)?);
                let qs = q.narrow(1, r0, t)?.contiguous()?.reshape((nkv, group * t, dim))?;
                let mut scores = (qs.matmul(&ks.t()?)? * hyper.attn_scale as f64)?;
                if let Some(cap) = hyper.attn_softcap {
                    scores = ((scores / cap as f64)?.tanh()? * cap as f64)?;
                }
                let scores = scores.reshape((nkv, group, t, len))?.broadcast_add(chunk_mask)?;
                let weights = candle_nn::ops::softmax_last_dim(&scores)?.reshape((nkv, group * t, len))?;
                let out = weights
                    .matmul(&vs)?
                    .reshape((nq, t, dim))?
                    .transpose(0, 1)?
                    .reshape((t, q_width))?;
                outs.push(out);
                r0 += t;
            }
            let att = Tensor::cat(&outs, 0)?;
            let mut proj = layer.output.forward(&att)?;
            if let Some(bias) = &layer.output_bias {
                proj = proj.broadcast_add(bias)?;
            }
            if let Some(w) = &layer.post_attn_norm {
                proj = candle_nn::ops::rms_norm(&proj, w, hyper.eps)?;
            }
            // Phi-2 feeds the attention's normed input to the MLP too, and adds both at the end.
            let h = match &layer.ffn_norm {
                Some(ffn_norm) => {
                    x = (x + &proj)?;
                    self.norm(ffn_norm, &x)?
                }
                None => h,
            };
            let mut up = layer.up.forward(&h)?;
            if let Some(bias) = &layer.up_bias {
                up = up.broadcast_add(bias)?;
            }
            let ffn = self.model.w.ffn;
            let act = |t: &Tensor| -> Result<Tensor> {
                Ok(match spec.activation {
                    Activation::Silu => candle_nn::ops::silu(t)?,
                    Activation::GeluTanh => t.gelu()?,
                })
            };
            let act = match spec.gated {
                true => (act(&up.narrow(1, 0, ffn)?)? * up.narrow(1, ffn, ffn)?)?,
                false => act(&up)?,
            };
            let mut down = layer.down.forward(&act.contiguous()?)?;
            if let Some(bias) = &layer.down_bias {
                down = down.broadcast_add(bias)?;
            }
            if let Some(w) = &layer.post_ffn_norm {
                down = candle_nn::ops::rms_norm(&down, w, hyper.eps)?;
            }
            x = match layer.ffn_norm {
                Some(_) => (x + down)?,
                None => ((x + proj)? + down)?,
            };
        }

        let last_rows = logit_rows(chunks);
        if last_rows.is_empty() {
            return Ok(Vec::new());
        }
        let picked = Tensor::new(
            last_rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            &self.device,
        )?;
        let normed = self.norm(&self.model.w.norm, &x.index_select(&picked, 0)?)?;
        let head = self
            .model
            .w
            .lm_head
            .as_ref()
            .unwrap_or(&self.model.w.embedding.head);
        let mut logits = head.forward(&normed)?;
        if let Some(bias) = &self.model.w.lm_head_bias {
            logits = logits.broadcast_add(bias)?;
        }
        if let Some(cap) = hyper.final_softcap {
            logits = ((logits / cap as f64)?.tanh()? * cap as f64)?;
        }
        Ok(logits.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }

    fn cache_shape(&self) -> (usize, usize) {
        let heads = self.model.hyper.heads;
        (self.model.w.layers.len(), heads.kv * heads.dim)
    }

    fn meta(&self) -> &ModelMeta {
        &self.model.meta
    }
}
