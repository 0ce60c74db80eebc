//! The decoder's forward pass on the crate's CPU blocks: weights in their GGML blocks ([`Matrix`],
//! [`Linear`]), keys and values in the engine's paged f16 pool, work on the crate's thread pool.

use half::slice::HalfFloatSliceExt;

use super::{Activation, Backend, Decoder, Norm, NormKind, RopeStyle};
use crate::batch::kv_cache::{BLOCK_TOKENS, KvPool};
use crate::batch::{BatchLm, Chunk};
use crate::cpu::ops::{self, Heads, Rope, RowPos, Scores};
use crate::cpu::{Linear, Matrix};
use crate::error::{LlmError, Result};
use crate::files::ModelMeta;

/// The CPU blocks as a decoder backend.
pub(crate) struct Cpu;

impl Backend for Cpu {
    type Linear = Linear;
    type Table = Matrix;
    type Vector = Vec<f32>;

    fn linear_shape(l: &Linear) -> (usize, usize) {
        (l.rows(), l.cols())
    }

    fn table_shape(t: &Matrix) -> (usize, usize) {
        (t.rows(), t.cols())
    }

    fn vector_len(v: &Vec<f32>) -> usize {
        v.len()
    }
}

/// The rotary tables of a step's rows, for one base.
struct RopeRows {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
}

/// cos and sin of every row of a step (`rope.pairs()` each), chunk after chunk.
pub(super) fn step_tables(rope: &Rope, chunks: &[Chunk]) -> (Vec<f32>, Vec<f32>) {
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for c in chunks {
        let (c_cos, c_sin) = rope.tables(c.start, c.tokens.len());
        cos.extend(c_cos);
        sin.extend(c_sin);
    }
    (cos, sin)
}

impl RopeRows {
    fn new(rope: &Rope, chunks: &[Chunk]) -> Self {
        let (cos, sin) = step_tables(rope, chunks);
        RopeRows {
            cos,
            sin,
            half: rope.pairs(),
        }
    }

    fn row(&self, i: usize) -> (&[f32], &[f32]) {
        (
            &self.cos[i * self.half..][..self.half],
            &self.sin[i * self.half..][..self.half],
        )
    }
}

/// Checks a step's chunks against the cache and vocabulary, and lists their rows and tokens.
pub(super) fn step_rows<'a>(chunks: &[Chunk<'a>], vocab: usize) -> Result<(Vec<RowPos<'a>>, Vec<u32>)> {
    let mut rows: Vec<RowPos> = Vec::new();
    let mut tokens: Vec<u32> = Vec::new();
    for c in chunks {
        let end = c.start + c.tokens.len();
        if c.tokens.is_empty() || end.div_ceil(BLOCK_TOKENS) > c.blocks.len() {
            return Err(LlmError::Internal(format!(
                "a chunk of {} tokens at {} with {} blocks",
                c.tokens.len(),
                c.start,
                c.blocks.len()
            )));
        }
        if let Some(t) = c.tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(LlmError::Internal(format!(
                "token id {t} is outside the vocabulary of {vocab}"
            )));
        }
        rows.extend((c.start..end).map(|pos| RowPos {
            blocks: c.blocks,
            pos,
        }));
        tokens.extend_from_slice(c.tokens);
    }
    Ok((rows, tokens))
}

/// The row of each chunk whose logits are wanted.
pub(super) fn logit_rows(chunks: &[Chunk]) -> Vec<usize> {
    let mut last_rows = Vec::new();
    let mut end = 0;
    for c in chunks {
        end += c.tokens.len();
        if c.logits {
            last_rows.push(end - 1);
        }
    }
    last_rows
}

impl Decoder<Cpu> {
    /// `out = norm(x)` row by row, RMSNorm or LayerNorm as the architecture has it.
    fn norm(&self, norm: &Norm<Vec<f32>>, x: &[f32], out: &mut [f32], width: usize) {
        let eps = self.hyper.eps;
        for (x, o) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
            match (self.spec.norm, &norm.bias) {
                (NormKind::Layer, Some(bias)) => ops::layer_norm(x, &norm.weight, bias, eps, o),
                _ => ops::rms_norm(x, &norm.weight, eps, o),
            }
        }
    }
}

impl BatchLm for Decoder<Cpu> {
    fn forward_batch(&mut self, chunks: &[Chunk], cache: &mut KvPool) -> Result<Vec<Vec<f32>>> {
        let (vocab, width) = (self.w.embedding.rows(), self.w.embedding.cols());
        let Heads { q: nq, kv: nkv, dim } = self.hyper.heads;
        let ffn = self.w.ffn;
        let (q_width, kv_width) = (nq * dim, nkv * dim);
        if cache.kv_width() != kv_width {
            return Err(LlmError::Internal(format!(
                "a cache of {} values per position for a model of {kv_width}",
                cache.kv_width()
            )));
        }
        let (rows, tokens) = step_rows(chunks, vocab)?;
        let m = tokens.len();
        let qkv_width = q_width + 2 * kv_width;
        let up_width = if self.spec.gated { 2 * ffn } else { ffn };
        let (spec, eps) = (self.spec, self.hyper.eps);

        let mut x = vec![0f32; m * width];
        for (row, &t) in x.chunks_exact_mut(width).zip(&tokens) {
            self.w.embedding.dequantize_row(t as usize, row);
        }
        if spec.embed_scale {
            let scale = (width as f32).sqrt();
            x.iter_mut().for_each(|v| *v *= scale);
        }
        let global = RopeRows::new(&self.hyper.rope, chunks);
        let local = self.hyper.local_rope.as_ref().map(|r| RopeRows::new(r, chunks));
        let mut h = vec![0f32; m * width];
        let mut qkv = vec![0f32; m * qkv_width];
        let mut att = vec![0f32; m * q_width];
        let mut proj = vec![0f32; m * width];
        let mut up = vec![0f32; m * up_width];
        let mut act = vec![0f32; m * ffn];
        let mut normed = vec![0f32; dim];

        for (l, layer) in self.w.layers.iter().enumerate() {
            self.norm(&layer.attn_norm, &x, &mut h, width);
            layer.qkv.matmul(&h, m, &mut qkv);
            let tables = match (&local, layer.window) {
                (Some(local), Some(_)) => local,
                _ => &global,
            };
            let (keys, values) = cache.layer(l);
            for (i, row) in qkv.chunks_exact_mut(qkv_width).enumerate() {
                if let Some(bias) = &layer.qkv_bias {
                    add(row, bias);
                }
                let (q, kv) = row.split_at_mut(q_width);
                let (k, v) = kv.split_at_mut(kv_width);
                if let (Some(q_norm), Some(k_norm)) = (&layer.q_norm, &layer.k_norm) {
                    for head in q.chunks_exact_mut(dim) {
                        ops::rms_norm(head, q_norm, eps, &mut normed);
                        head.copy_from_slice(&normed);
                    }
                    for head in k.chunks_exact_mut(dim) {
                        ops::rms_norm(head, k_norm, eps, &mut normed);
                        head.copy_from_slice(&normed);
                    }
                }
                let (c, s) = tables.row(i);
                rope_heads(spec.rope, q, dim, c, s);
                rope_heads(spec.rope, k, dim, c, s);
                let at = ops::cache_row(rows[i].blocks, rows[i].pos, kv_width);
                keys[at..at + kv_width].convert_from_f32_slice(k);
                values[at..at + kv_width].convert_from_f32_slice(v);
            }
            ops::paged_attention(
                &qkv,
                qkv_width,
                &rows,
                keys,
                values,
                self.hyper.heads,
                Scores {
                    scale: self.hyper.attn_scale,
                    softcap: self.hyper.attn_softcap,
                    window: layer.window,
                },
                &mut att,
            );
            layer.output.matmul(&att, m, &mut proj);
            add_bias(&mut proj, layer.output_bias.as_deref(), width);
            post_norm(&mut proj, layer.post_attn_norm.as_deref(), eps, width);
            // Phi-2 feeds the attention's normed input to the MLP too, and adds both at the end.
            if let Some(ffn_norm) = &layer.ffn_norm {
                add(&mut x, &proj);
                self.norm(ffn_norm, &x, &mut h, width);
            }
            layer.up.matmul(&h, m, &mut up);
            add_bias(&mut up, layer.up_bias.as_deref(), up_width);
            for (u, a) in up.chunks_exact_mut(up_width).zip(act.chunks_exact_mut(ffn)) {
                match (spec.gated, spec.activation) {
                    (true, activation) => {
                        let (g, u) = u.split_at_mut(ffn);
                        match activation {
                            Activation::Silu => ops::silu_mul(g, u),
                            Activation::GeluTanh => ops::gelu_tanh_mul(g, u),
                        }
                        a.copy_from_slice(g);
                    }
                    (false, Activation::Silu) => {
                        ops::silu(u);
                        a.copy_from_slice(u);
                    }
                    (false, Activation::GeluTanh) => {
                        ops::gelu_tanh(u);
                        a.copy_from_slice(u);
                    }
                }
            }
            if layer.ffn_norm.is_none() {
                add(&mut x, &proj);
            }
            layer.down.matmul(&act, m, &mut proj);
            add_bias(&mut proj, layer.down_bias.as_deref(), width);
            post_norm(&mut proj, layer.post_ffn_norm.as_deref(), eps, width);
            add(&mut x, &proj);
        }

        // The last row of every chunk that wants logits, normed, through the output head at once.
        let last_rows = logit_rows(chunks);
        let k = last_rows.len();
        if k == 0 {
            return Ok(Vec::new());
        }
        let mut selected = Vec::with_capacity(k * width);
        for &r in &last_rows {
            selected.extend_from_slice(&x[r * width..][..width]);
        }
        let mut normed = vec![0f32; k * width];
        self.norm(&self.w.norm, &selected, &mut normed, width);
        let mut logits = vec![0f32; k * vocab];
        match &self.w.lm_head {
            Some(head) => head.matmul(&normed, k, &mut logits),
            None => self.w.embedding.matmul(&normed, k, &mut logits, vocab),
        }
        add_bias(&mut logits, self.w.lm_head_bias.as_deref(), vocab);
        if let Some(cap) = self.hyper.final_softcap {
            logits.iter_mut().for_each(|l| *l = cap * (*l / cap).tanh());
        }
        Ok(logits.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }

    fn cache_shape(&self) -> (usize, usize) {
        let heads = self.hyper.heads;
        (self.w.layers.len(), heads.kv * heads.dim)
    }

    fn meta(&self) -> &ModelMeta {
        &self.meta
    }
}

/// Each row of `x` (`width` long) RMS-normed by `weight` in place, when there is one (Gemma 2/3's
/// post-norms).
fn post_norm(x: &mut [f32], weight: Option<&[f32]>, eps: f32, width: usize) {
    if let Some(weight) = weight {
        let mut normed = vec![0f32; width];
        for row in x.chunks_exact_mut(width) {
            ops::rms_norm(row, weight, eps, &mut normed);
            row.copy_from_slice(&normed);
        }
    }
}

/// Adds `bias` to every row of `x` (`width` long), when there is one.
fn add_bias(x: &mut [f32], bias: Option<&[f32]>, width: usize) {
    if let Some(bias) = bias {
        for row in x.chunks_exact_mut(width) {
            add(row, bias);
        }
    }
}

/// Rotary embedding of every head in `x`, on the first `2 * cos.len()` dimensions of each.
fn rope_heads(style: RopeStyle, x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    for head in x.chunks_exact_mut(head_dim) {
        let rotated = &mut head[..2 * cos.len()];
        match style {
            RopeStyle::Interleaved => ops::rope_interleaved(rotated, 2 * cos.len(), cos, sin),
            RopeStyle::Neox => ops::rope_neox(rotated, cos, sin),
        }
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (x, y) in x.iter_mut().zip(y) {
        *x += y;
    }
}
