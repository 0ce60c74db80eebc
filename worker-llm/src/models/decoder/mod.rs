//! One decoder-only transformer for every architecture on the CPU, batched over the engine's paged
//! cache. Each architecture is described by how it differs from Llama ([`Spec`]: rotary style,
//! QK-norm, post-norms, embedding scale, activation, attention biases), its sizes and its per-layer
//! attention ([`Hyper`]: grouped heads, rotary bases and scaling, sliding-window layers, soft-capping),
//! and where its tensors are: a GGUF file ([`gguf`]) or a HuggingFace safetensors checkpoint ([`hf`]),
//! both read under GGUF's tensor names. Weights stay in their GGML blocks ([`crate::cpu`]).

mod gguf;
mod hf;
mod spec;

use half::slice::HalfFloatSliceExt;

use crate::batch::kv_cache::{BLOCK_TOKENS, KvPool};
use crate::batch::{BatchLm, Chunk};
use crate::cpu::ops::{self, Heads, Rope, RowPos, Scores};
use crate::cpu::{Linear, Matrix, Unsupported};
use crate::error::{LlmError, Result};
use crate::files::ModelMeta;

pub(crate) use gguf::on_cpu;
pub(crate) use hf::on_cpu as safetensors_on_cpu;
pub(crate) use spec::{Activation, Hyper, RopeStyle, Spec};

/// A tensor, or why this module cannot hold it (the caller falls back to Candle's model), or an error.
pub(crate) type Loaded<T> = Result<std::result::Result<T, Unsupported>>;

/// Where the tensors are, under GGUF's names (`blk.N.attn_q.weight`, `token_embd.weight`...).
pub(crate) trait Source {
    /// Whether the tensor exists.
    fn has(&self, name: &str) -> bool;
    /// The named matrices stacked by rows.
    fn matrix(&self, names: &[&str]) -> Loaded<Matrix>;
    /// The named matrices applied to one input (stacked, or one per GGML type).
    fn linear(&self, names: &[&str]) -> Loaded<Linear>;
    /// A 1-D weight as f32.
    fn vector(&self, name: &str) -> Loaded<Vec<f32>>;
}

/// One transformer block (its keys and values live in the engine's [`KvPool`]).
struct Layer {
    attn_norm: Vec<f32>,
    /// Q, K and V stacked.
    qkv: Linear,
    /// Q, K and V biases stacked (empty without).
    qkv_bias: Vec<f32>,
    /// Per-head norms of queries and keys (empty without).
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    output: Matrix,
    post_attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    /// Gate and up stacked.
    gate_up: Linear,
    down: Matrix,
    post_ffn_norm: Vec<f32>,
    /// Keys visible to a query: its own position and the `window - 1` before it.
    window: Option<usize>,
}

/// A decoder on the CPU blocks.
pub(crate) struct CpuDecoder {
    spec: Spec,
    meta: ModelMeta,
    embedding: Matrix,
    /// `None` when the output projection is tied to the embedding.
    lm_head: Option<Matrix>,
    norm: Vec<f32>,
    layers: Vec<Layer>,
    heads: Heads,
    ffn: usize,
    eps: f32,
    rope: Rope,
    local_rope: Option<Rope>,
    attn_scale: f32,
    attn_softcap: Option<f32>,
    final_softcap: Option<f32>,
}

impl CpuDecoder {
    /// Reads every tensor the architecture needs from `src`; `Ok(Err(..))` when one has no kernel here.
    pub(crate) fn build(spec: Spec, hyper: Hyper, src: &dyn Source, meta: ModelMeta) -> Loaded<CpuDecoder> {
        macro_rules! try_load {
            ($e:expr) => {
                match $e? {
                    Ok(v) => v,
                    Err(unsupported) => return Ok(Err(unsupported)),
                }
            };
        }
        let optional = |name: String| -> Loaded<Vec<f32>> {
            match src.has(&name) {
                true => src.vector(&name),
                false => Ok(Ok(Vec::new())),
            }
        };
        let Heads {
            q: q_heads,
            kv: kv_heads,
            dim: head_dim,
        } = hyper.heads;
        let embedding = try_load!(src.matrix(&["token_embd.weight"]));
        let width = embedding.cols();
        let lm_head = match src.has("output.weight") {
            true => Some(try_load!(src.matrix(&["output.weight"]))),
            false => None,
        };
        let mut blocks = Vec::with_capacity(hyper.layers);
        let mut ffn = 0;
        for l in 0..hyper.layers {
            let t = |name: &str| format!("blk.{l}.{name}.weight");
            let b = |name: &str| format!("blk.{l}.{name}.bias");
            // Phi-3 stores Q, K and V as one tensor, and gate and up as one `ffn_up`.
            let qkv = match src.has(&t("attn_qkv")) {
                true => try_load!(src.linear(&[&t("attn_qkv")])),
                false => try_load!(src.linear(&[&t("attn_q"), &t("attn_k"), &t("attn_v")])),
            };
            let gate_up = match src.has(&t("ffn_gate")) {
                true => try_load!(src.linear(&[&t("ffn_gate"), &t("ffn_up")])),
                false => try_load!(src.linear(&[&t("ffn_up")])),
            };
            ffn = gate_up.rows() / 2;
            let mut qkv_bias = Vec::new();
            if spec.qkv_bias {
                for name in ["attn_q", "attn_k", "attn_v"] {
                    qkv_bias.extend(try_load!(src.vector(&b(name))));
                }
            }
            blocks.push(Layer {
                attn_norm: try_load!(src.vector(&t("attn_norm"))),
                qkv,
                qkv_bias,
                q_norm: try_load!(optional(t("attn_q_norm"))),
                k_norm: try_load!(optional(t("attn_k_norm"))),
                output: try_load!(src.matrix(&[&t("attn_output")])),
                post_attn_norm: try_load!(optional(t("post_attention_norm"))),
                ffn_norm: try_load!(src.vector(&t("ffn_norm"))),
                gate_up,
                down: try_load!(src.matrix(&[&t("ffn_down")])),
                post_ffn_norm: try_load!(optional(t("post_ffw_norm"))),
                window: hyper.windows.get(l).copied().flatten(),
            });
        }
        let qkv_rows = (q_heads + 2 * kv_heads) * head_dim;
        let shapes_agree = blocks.iter().all(|l| {
            l.qkv.rows() == qkv_rows
                && l.output.cols() == q_heads * head_dim
                && l.output.rows() == width
                && l.down.cols() == ffn
                && l.gate_up.rows() == 2 * ffn
        });
        let norms_present = blocks.iter().all(|l| {
            (!spec.qk_norm || (l.q_norm.len() == head_dim && l.k_norm.len() == head_dim))
                && (!spec.post_norms || (l.post_attn_norm.len() == width && l.post_ffn_norm.len() == width))
                && (!spec.qkv_bias || l.qkv_bias.len() == qkv_rows)
        });
        if !shapes_agree || !norms_present {
            return Err(LlmError::Config {
                file: meta.architecture.clone(),
                reason: format!(
                    "a tensor's shape disagrees with {q_heads} query heads and {kv_heads} key/value heads \
                     of {head_dim} dimensions, or a QK-norm, post-norm or bias tensor is missing"
                ),
            });
        }
        Ok(Ok(CpuDecoder {
            spec,
            meta,
            embedding,
            lm_head,
            norm: try_load!(src.vector("output_norm.weight")),
            layers: blocks,
            heads: hyper.heads,
            ffn,
            eps: hyper.eps,
            rope: hyper.rope,
            local_rope: hyper.local_rope,
            attn_scale: hyper.attn_scale,
            attn_softcap: hyper.attn_softcap,
            final_softcap: hyper.final_softcap,
        }))
    }
}

/// The rotary tables of a step's rows, for one base.
struct RopeRows {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
}

impl RopeRows {
    fn new(rope: &Rope, chunks: &[Chunk]) -> Self {
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for c in chunks {
            let (c_cos, c_sin) = rope.tables(c.start, c.tokens.len());
            cos.extend(c_cos);
            sin.extend(c_sin);
        }
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

impl BatchLm for CpuDecoder {
    fn forward_batch(&mut self, chunks: &[Chunk], cache: &mut KvPool) -> Result<Vec<Vec<f32>>> {
        let vocab = self.embedding.rows();
        let Heads { q: nq, kv: nkv, dim } = self.heads;
        let (width, ffn) = (self.embedding.cols(), self.ffn);
        let (q_width, kv_width) = (nq * dim, nkv * dim);
        if cache.kv_width() != kv_width {
            return Err(LlmError::Internal(format!(
                "a cache of {} values per position for a model of {kv_width}",
                cache.kv_width()
            )));
        }
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
        let m = tokens.len();
        let qkv_width = q_width + 2 * kv_width;
        let spec = self.spec;

        let mut x = vec![0f32; m * width];
        for (row, &t) in x.chunks_exact_mut(width).zip(&tokens) {
            self.embedding.dequantize_row(t as usize, row);
        }
        if spec.embed_scale {
            let scale = (width as f32).sqrt();
            x.iter_mut().for_each(|v| *v *= scale);
        }
        let global = RopeRows::new(&self.rope, chunks);
        let local = self.local_rope.as_ref().map(|r| RopeRows::new(r, chunks));
        let mut h = vec![0f32; m * width];
        let mut qkv = vec![0f32; m * qkv_width];
        let mut att = vec![0f32; m * q_width];
        let mut proj = vec![0f32; m * width];
        let mut gate_up = vec![0f32; m * 2 * ffn];
        let mut act = vec![0f32; m * ffn];
        let mut normed = vec![0f32; dim];

        for (l, layer) in self.layers.iter().enumerate() {
            for (x, h) in x.chunks_exact(width).zip(h.chunks_exact_mut(width)) {
                ops::rms_norm(x, &layer.attn_norm, self.eps, h);
            }
            layer.qkv.matmul(&h, m, &mut qkv);
            let tables = match (&local, layer.window) {
                (Some(local), Some(_)) => local,
                _ => &global,
            };
            let (keys, values) = cache.layer(l);
            for (i, row) in qkv.chunks_exact_mut(qkv_width).enumerate() {
                if !layer.qkv_bias.is_empty() {
                    add(row, &layer.qkv_bias);
                }
                let (q, kv) = row.split_at_mut(q_width);
                let (k, v) = kv.split_at_mut(kv_width);
                if spec.qk_norm {
                    for head in q.chunks_exact_mut(dim) {
                        ops::rms_norm(head, &layer.q_norm, self.eps, &mut normed);
                        head.copy_from_slice(&normed);
                    }
                    for head in k.chunks_exact_mut(dim) {
                        ops::rms_norm(head, &layer.k_norm, self.eps, &mut normed);
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
                self.heads,
                Scores {
                    scale: self.attn_scale,
                    softcap: self.attn_softcap,
                    window: layer.window,
                },
                &mut att,
            );
            layer.output.matmul(&att, m, &mut proj, width);
            residual(&mut x, &mut proj, &layer.post_attn_norm, self.eps, width);

            for (x, h) in x.chunks_exact(width).zip(h.chunks_exact_mut(width)) {
                ops::rms_norm(x, &layer.ffn_norm, self.eps, h);
            }
            layer.gate_up.matmul(&h, m, &mut gate_up);
            for (gu, a) in gate_up.chunks_exact_mut(2 * ffn).zip(act.chunks_exact_mut(ffn)) {
                let (g, u) = gu.split_at_mut(ffn);
                match spec.activation {
                    Activation::Silu => ops::silu_mul(g, u),
                    Activation::GeluTanh => ops::gelu_tanh_mul(g, u),
                }
                a.copy_from_slice(g);
            }
            layer.down.matmul(&act, m, &mut proj, width);
            residual(&mut x, &mut proj, &layer.post_ffn_norm, self.eps, width);
        }

        // The last row of every chunk that wants logits, normed, through the output head at once.
        let mut last_rows = Vec::new();
        let mut end = 0;
        for c in chunks {
            end += c.tokens.len();
            if c.logits {
                last_rows.push(end - 1);
            }
        }
        let k = last_rows.len();
        if k == 0 {
            return Ok(Vec::new());
        }
        let mut normed = vec![0f32; k * width];
        for (&r, out) in last_rows.iter().zip(normed.chunks_exact_mut(width)) {
            ops::rms_norm(&x[r * width..][..width], &self.norm, self.eps, out);
        }
        let head = self.lm_head.as_ref().unwrap_or(&self.embedding);
        let mut logits = vec![0f32; k * head.rows()];
        head.matmul(&normed, k, &mut logits, head.rows());
        if let Some(cap) = self.final_softcap {
            logits.iter_mut().for_each(|l| *l = cap * (*l / cap).tanh());
        }
        Ok(logits.chunks_exact(head.rows()).map(<[f32]>::to_vec).collect())
    }

    fn cache_shape(&self) -> (usize, usize) {
        (self.layers.len(), self.heads.kv * self.heads.dim)
    }

    fn meta(&self) -> &ModelMeta {
        &self.meta
    }
}

/// `x += y`, with `y` RMS-normed by `post_norm` first when there is one.
fn residual(x: &mut [f32], y: &mut [f32], post_norm: &[f32], eps: f32, width: usize) {
    if !post_norm.is_empty() {
        let mut normed = vec![0f32; width];
        for row in y.chunks_exact_mut(width) {
            ops::rms_norm(row, post_norm, eps, &mut normed);
            row.copy_from_slice(&normed);
        }
    }
    add(x, y);
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
