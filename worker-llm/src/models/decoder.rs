//! One decoder-only transformer for the GGUF architectures on the CPU, batched over the engine's paged
//! cache; each architecture is described by how it differs from Llama ([`Spec`]), as llama.cpp's graph
//! for it does: rotary style and per-layer bases, QK-norm, post-norms, embedding scale, activation,
//! sliding-window layers, attention biases. Weights stay in their GGML blocks ([`crate::cpu`]).

use candle_core::quantized::gguf_file::Content;
use half::slice::HalfFloatSliceExt;

use crate::batch::kv_cache::{BLOCK_TOKENS, KvPool};
use crate::batch::{BatchLm, Chunk};
use crate::cpu::ops::{self, Heads, Rope, RowPos};
use crate::cpu::{Linear, Matrix, Unsupported, vector};
use crate::error::{LlmError, Result};
use crate::files::{ModelMeta, gguf_u64};

/// How dimensions are paired by the rotary embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RopeStyle {
    /// (2i, 2i+1): GGML's "normal" rope (Llama GGUF files store Q and K permuted for it).
    Interleaved,
    /// (i, i + d/2): GPT-NeoX's (Qwen, Gemma, Phi-3).
    Neox,
}

/// The gated MLP's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// SwiGLU (Llama, Qwen).
    Silu,
    /// GeGLU with the tanh approximation (Gemma).
    GeluTanh,
}

/// How an architecture differs from Llama.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub(crate) rope: RopeStyle,
    /// RMSNorm of each query and key head before the rotary embedding (Qwen3, Gemma 3).
    pub(crate) qk_norm: bool,
    /// RMSNorm of the attention and MLP outputs before the residual add (Gemma 2/3).
    pub(crate) post_norms: bool,
    /// Scale the token embedding by sqrt(width) (Gemma).
    pub(crate) embed_scale: bool,
    pub(crate) activation: Activation,
    /// Biases on Q, K and V (Qwen2).
    pub(crate) qkv_bias: bool,
    /// Sliding-window layers: all but every `n`-th layer (Gemma 3: 5 of 6), with their own rotary
    /// base (`rope.local_freq_base`, default 10000).
    pub(crate) sliding_pattern: Option<usize>,
}

impl Spec {
    /// Llama, Mistral, SmolLM, TinyLlama.
    pub(crate) const LLAMA: Spec = Spec {
        rope: RopeStyle::Interleaved,
        qk_norm: false,
        post_norms: false,
        embed_scale: false,
        activation: Activation::Silu,
        qkv_bias: false,
        sliding_pattern: None,
    };
    /// Qwen2 / Qwen2.5.
    pub(crate) const QWEN2: Spec = Spec {
        rope: RopeStyle::Neox,
        qkv_bias: true,
        ..Spec::LLAMA
    };
    /// Qwen3 (dense).
    pub(crate) const QWEN3: Spec = Spec {
        rope: RopeStyle::Neox,
        qk_norm: true,
        ..Spec::LLAMA
    };
    /// Gemma 3 (text).
    pub(crate) const GEMMA3: Spec = Spec {
        rope: RopeStyle::Neox,
        qk_norm: true,
        post_norms: true,
        embed_scale: true,
        activation: Activation::GeluTanh,
        qkv_bias: false,
        sliding_pattern: Some(6),
    };
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
    /// Whether the layer uses the local rotary base.
    local_rope: bool,
}

/// A GGUF decoder on the CPU blocks.
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
}

impl CpuDecoder {
    /// `Ok(Err(..))` when a tensor's type has no CPU kernel here (the caller uses Candle's model).
    pub(crate) fn load(
        spec: Spec,
        content: &Content,
        file: &std::fs::File,
        meta: ModelMeta,
    ) -> Result<std::result::Result<CpuDecoder, Unsupported>> {
        macro_rules! try_load {
            ($e:expr) => {
                match $e? {
                    Ok(v) => v,
                    Err(unsupported) => return Ok(Err(unsupported)),
                }
            };
        }
        let arch = meta.architecture.clone();
        let int = |key: &str| gguf_u64(content, &format!("{arch}.{key}")).map(|v| v as usize);
        let float = |key: &str| {
            content
                .metadata
                .get(&format!("{arch}.{key}"))
                .and_then(|v| v.to_f32().ok())
        };
        let missing = |key: &str| LlmError::Config {
            file: "GGUF".into(),
            reason: format!("no `{arch}.{key}` in the metadata"),
        };
        let has = |name: &str| content.tensor_infos.contains_key(name);
        let layers = int("block_count").ok_or_else(|| missing("block_count"))?;
        let width = int("embedding_length").ok_or_else(|| missing("embedding_length"))?;
        let q_heads = int("attention.head_count").ok_or_else(|| missing("attention.head_count"))?;
        let kv_heads = int("attention.head_count_kv").unwrap_or(q_heads);
        let head_dim = int("attention.key_length").unwrap_or(width / q_heads.max(1));
        if q_heads == 0 || kv_heads == 0 || q_heads % kv_heads != 0 || head_dim % 2 != 0 {
            return Err(LlmError::Config {
                file: "GGUF".into(),
                reason: format!("{q_heads} query heads, {kv_heads} key/value heads of {head_dim} dimensions"),
            });
        }
        let rope_dims = int("rope.dimension_count").unwrap_or(head_dim).min(head_dim);
        let theta = float("rope.freq_base").unwrap_or(10_000.0) as f64;
        let factors = match has("rope_freqs.weight") {
            true => Some(try_load!(vector(content, file, "rope_freqs.weight"))),
            false => None,
        };
        let window = int("attention.sliding_window");
        let pattern = spec
            .sliding_pattern
            .map(|default| int("attention.sliding_window_type").unwrap_or(default).max(1));
        let local_theta = float("rope.local_freq_base").unwrap_or(10_000.0) as f64;
        let embedding = try_load!(Matrix::load(content, file, &["token_embd.weight"]));
        let lm_head = match has("output.weight") {
            true => Some(try_load!(Matrix::load(content, file, &["output.weight"]))),
            false => None,
        };
        let mut blocks = Vec::with_capacity(layers);
        let mut ffn = 0;
        for l in 0..layers {
            let t = |name: &str| format!("blk.{l}.{name}.weight");
            let b = |name: &str| format!("blk.{l}.{name}.bias");
            let optional = |name: String| -> Result<std::result::Result<Vec<f32>, Unsupported>> {
                match has(&name) {
                    true => vector(content, file, &name),
                    false => Ok(Ok(Vec::new())),
                }
            };
            let (q, k, v) = (t("attn_q"), t("attn_k"), t("attn_v"));
            let (gate, up) = (t("ffn_gate"), t("ffn_up"));
            let gate_up = try_load!(Linear::load(content, file, &[&gate, &up]));
            ffn = gate_up.rows() / 2;
            let mut qkv_bias = Vec::new();
            if spec.qkv_bias {
                for name in ["attn_q", "attn_k", "attn_v"] {
                    qkv_bias.extend(try_load!(vector(content, file, &b(name))));
                }
            }
            let sliding = pattern.is_some_and(|n| (l + 1) % n != 0) && window.is_some();
            blocks.push(Layer {
                attn_norm: try_load!(vector(content, file, &t("attn_norm"))),
                qkv: try_load!(Linear::load(content, file, &[&q, &k, &v])),
                qkv_bias,
                q_norm: try_load!(optional(t("attn_q_norm"))),
                k_norm: try_load!(optional(t("attn_k_norm"))),
                output: try_load!(Matrix::load(content, file, &[&t("attn_output")])),
                post_attn_norm: try_load!(optional(t("post_attention_norm"))),
                ffn_norm: try_load!(vector(content, file, &t("ffn_norm"))),
                gate_up,
                down: try_load!(Matrix::load(content, file, &[&t("ffn_down")])),
                post_ffn_norm: try_load!(optional(t("post_ffw_norm"))),
                window: window.filter(|_| sliding),
                local_rope: sliding,
            });
        }
        let norms_present = blocks.first().is_none_or(|l| {
            (!spec.qk_norm || (l.q_norm.len() == head_dim && l.k_norm.len() == head_dim))
                && (!spec.post_norms || (l.post_attn_norm.len() == width && l.post_ffn_norm.len() == width))
                && (!spec.qkv_bias || l.qkv_bias.len() == (q_heads + 2 * kv_heads) * head_dim)
        });
        if !norms_present {
            return Err(LlmError::Config {
                file: "GGUF".into(),
                reason: format!(
                    "{arch}: a QK-norm, post-norm or bias tensor is missing or of the wrong size"
                ),
            });
        }
        let local_rope = pattern.map(|_| Rope::new(rope_dims, local_theta, None));
        Ok(Ok(CpuDecoder {
            spec,
            meta,
            embedding,
            lm_head,
            norm: try_load!(vector(content, file, "output_norm.weight")),
            layers: blocks,
            heads: Heads {
                q: q_heads,
                kv: kv_heads,
                dim: head_dim,
            },
            ffn,
            eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope: Rope::new(rope_dims, theta, factors.as_deref()),
            local_rope,
        }))
    }
}

/// The model on the CPU decoder, when the device is the CPU and every tensor has a kernel here; `None`
/// sends the caller to Candle's model (GPUs, GGML types without a CPU kernel).
pub(crate) fn on_cpu(
    spec: Spec,
    ctx: &super::LoadContext,
    content: &Content,
    file: &std::fs::File,
) -> Result<Option<super::LoadedModel>> {
    if !ctx.device.is_cpu() {
        return Ok(None);
    }
    Ok(CpuDecoder::load(spec, content, file, ctx.meta.clone())?
        .ok()
        .map(|model| super::LoadedModel::Batched(Box::new(model))))
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
            let tables = match (&local, layer.local_rope) {
                (Some(local), true) => local,
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
                layer.window,
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

#[cfg(test)]
#[path = "decoder_tests.rs"]
mod tests;
