//! One decoder-only transformer for every architecture, batched over the engine's paged cache.
//!
//! Each architecture is described by how it differs from Llama ([`Spec`]: norm kind, rotary style,
//! QK-norm, post-norms, parallel attention and MLP, gated or plain MLP, embedding scale, activation),
//! its sizes and per-layer attention ([`Hyper`]: grouped heads, rotary bases and scalings, sliding-window
//! layers, soft-capping), and where its tensors are: a GGUF file ([`gguf`]) or a HuggingFace safetensors
//! checkpoint ([`hf`]), both read under GGUF's tensor names into one [`Weights`] shape.
//!
//! Two backends run the same weights: on the CPU the crate's own blocks and kernels ([`cpu`], weights
//! kept in their GGML blocks), and everywhere else, or for a GGML type those kernels lack, Candle's
//! tensor ops on the model's device ([`device`], CUDA and Metal included).

mod cpu;
mod device;
mod gguf;
mod hf;
mod rope;
mod spec;

use crate::cpu::Unsupported;
use crate::cpu::ops::Heads;
use crate::error::{LlmError, Result};
use crate::files::ModelMeta;
use crate::models::{LoadContext, LoadedModel};

pub(crate) use spec::{Activation, Hyper, NormKind, RopeStyle, Spec};

/// A value, or why a backend cannot hold it (a GGML type without a kernel), or an error.
pub(crate) type Loaded<T> = Result<std::result::Result<T, Unsupported>>;

/// What one backend holds weights as.
pub(crate) trait Backend {
    /// A projection: one or more tensors stacked by output rows.
    type Linear;
    /// The token embedding (also the output head when they are tied).
    type Table;
    /// A 1-D weight (norm scale, bias).
    type Vector;
    /// (output rows, input columns) of a projection.
    fn linear_shape(l: &Self::Linear) -> (usize, usize);
    /// (vocabulary, width) of the embedding.
    fn table_shape(t: &Self::Table) -> (usize, usize);
    /// Length of a 1-D weight.
    fn vector_len(v: &Self::Vector) -> usize;
}

/// Where the tensors are, under GGUF's names (`blk.N.attn_q.weight`, `token_embd.weight`...).
pub(crate) trait Source<B: Backend> {
    /// Whether the tensor exists.
    fn has(&self, name: &str) -> bool;
    /// The named matrices stacked by rows, applied to one input.
    fn linear(&self, names: &[&str]) -> Loaded<B::Linear>;
    /// The token embedding.
    fn table(&self, name: &str) -> Loaded<B::Table>;
    /// The named 1-D weights, one after the other.
    fn vector(&self, names: &[&str]) -> Loaded<B::Vector>;
}

/// A norm's scale, and its bias for a LayerNorm.
pub(crate) struct Norm<V> {
    weight: V,
    bias: Option<V>,
}

/// One transformer block (its keys and values live in the engine's cache).
pub(crate) struct Layer<B: Backend> {
    attn_norm: Norm<B::Vector>,
    /// Q, K and V stacked.
    qkv: B::Linear,
    qkv_bias: Option<B::Vector>,
    /// Per-head norms of queries and keys.
    q_norm: Option<B::Vector>,
    k_norm: Option<B::Vector>,
    output: B::Linear,
    output_bias: Option<B::Vector>,
    post_attn_norm: Option<B::Vector>,
    /// `None` when attention and MLP run in parallel on the attention's norm (Phi-2).
    ffn_norm: Option<Norm<B::Vector>>,
    /// Gate and up stacked (gated MLP), or up alone.
    up: B::Linear,
    up_bias: Option<B::Vector>,
    down: B::Linear,
    down_bias: Option<B::Vector>,
    post_ffn_norm: Option<B::Vector>,
    /// Keys visible to a query: its own position and the `window - 1` before it.
    window: Option<usize>,
}

/// Every weight of a decoder, on one backend.
pub(crate) struct Weights<B: Backend> {
    embedding: B::Table,
    /// `None` when the output head is tied to the embedding.
    lm_head: Option<B::Linear>,
    lm_head_bias: Option<B::Vector>,
    norm: Norm<B::Vector>,
    layers: Vec<Layer<B>>,
    /// The MLP's hidden width.
    ffn: usize,
}

/// A decoder: what the architecture is, its sizes, and its weights on backend `B`.
pub(crate) struct Decoder<B: Backend> {
    spec: Spec,
    hyper: Hyper,
    meta: ModelMeta,
    w: Weights<B>,
}

macro_rules! try_load {
    ($e:expr) => {
        match $e? {
            Ok(v) => v,
            Err(unsupported) => return Ok(Err(unsupported)),
        }
    };
}

impl<B: Backend> Decoder<B> {
    /// Reads every tensor the architecture needs from `src`; `Ok(Err(..))` when the backend cannot
    /// hold one.
    pub(crate) fn build(spec: Spec, hyper: Hyper, src: &dyn Source<B>, meta: ModelMeta) -> Loaded<Self> {
        let optional = |names: &[String]| -> Loaded<Option<B::Vector>> {
            match names.iter().all(|n| src.has(n)) {
                true => {
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    Ok(src.vector(&names)?.map(Some))
                }
                false => Ok(Ok(None)),
            }
        };
        let norm = |name: &str| -> Loaded<Norm<B::Vector>> {
            let weight = try_load!(src.vector(&[&format!("{name}.weight")]));
            let bias = try_load!(optional(&[format!("{name}.bias")]));
            Ok(Ok(Norm { weight, bias }))
        };
        let embedding = try_load!(src.table("token_embd.weight"));
        let (vocab, width) = B::table_shape(&embedding);
        let lm_head = match src.has("output.weight") {
            true => Some(try_load!(src.linear(&["output.weight"]))),
            false => None,
        };
        let Heads { q, kv, dim } = hyper.heads;
        let qkv_rows = (q + 2 * kv) * dim;
        let mut layers = Vec::with_capacity(hyper.layers);
        let mut ffn = 0;
        for l in 0..hyper.layers {
            let t = |name: &str| format!("blk.{l}.{name}.weight");
            let b = |name: &str| format!("blk.{l}.{name}.bias");
            // Phi-3 stores Q, K and V as one tensor, and gate and up as one `ffn_up`.
            let (qkv, qkv_bias) = match src.has(&t("attn_qkv")) {
                true => (
                    try_load!(src.linear(&[&t("attn_qkv")])),
                    try_load!(optional(&[b("attn_qkv")])),
                ),
                false => (
                    try_load!(src.linear(&[&t("attn_q"), &t("attn_k"), &t("attn_v")])),
                    try_load!(optional(&[b("attn_q"), b("attn_k"), b("attn_v")])),
                ),
            };
            let (up, up_bias) = match src.has(&t("ffn_gate")) {
                true => (
                    try_load!(src.linear(&[&t("ffn_gate"), &t("ffn_up")])),
                    try_load!(optional(&[b("ffn_gate"), b("ffn_up")])),
                ),
                false => (
                    try_load!(src.linear(&[&t("ffn_up")])),
                    try_load!(optional(&[b("ffn_up")])),
                ),
            };
            let up_rows = B::linear_shape(&up).0;
            ffn = if spec.gated { up_rows / 2 } else { up_rows };
            layers.push(Layer {
                attn_norm: try_load!(norm(&format!("blk.{l}.attn_norm"))),
                qkv,
                qkv_bias,
                q_norm: try_load!(optional(&[t("attn_q_norm")])),
                k_norm: try_load!(optional(&[t("attn_k_norm")])),
                output: try_load!(src.linear(&[&t("attn_output")])),
                output_bias: try_load!(optional(&[b("attn_output")])),
                post_attn_norm: try_load!(optional(&[t("post_attention_norm")])),
                ffn_norm: match spec.parallel {
                    true => None,
                    false => Some(try_load!(norm(&format!("blk.{l}.ffn_norm")))),
                },
                up,
                up_bias,
                down: try_load!(src.linear(&[&t("ffn_down")])),
                down_bias: try_load!(optional(&[b("ffn_down")])),
                post_ffn_norm: try_load!(optional(&[t("post_ffw_norm")])),
                window: hyper.windows.get(l).copied().flatten(),
            });
        }
        let len = |v: &Option<B::Vector>| v.as_ref().map(B::vector_len);
        let norm_ok = |n: &Norm<B::Vector>| {
            B::vector_len(&n.weight) == width
                && len(&n.bias).is_none_or(|l| l == width)
                && (spec.norm == NormKind::Rms || n.bias.is_some())
        };
        let bad_layer = layers.iter().position(|l| {
            let up_rows = if spec.gated { 2 * ffn } else { ffn };
            B::linear_shape(&l.qkv) != (qkv_rows, width)
                || B::linear_shape(&l.output) != (width, q * dim)
                || B::linear_shape(&l.up) != (up_rows, width)
                || B::linear_shape(&l.down) != (width, ffn)
                || !norm_ok(&l.attn_norm)
                || l.ffn_norm.as_ref().is_some_and(|n| !norm_ok(n))
                || len(&l.qkv_bias).is_some_and(|n| n != qkv_rows)
                || (spec.qkv_bias && l.qkv_bias.is_none())
                || len(&l.output_bias).is_some_and(|n| n != width)
                || len(&l.up_bias).is_some_and(|n| n != up_rows)
                || len(&l.down_bias).is_some_and(|n| n != width)
                || (spec.qk_norm && (len(&l.q_norm) != Some(dim) || len(&l.k_norm) != Some(dim)))
                || (spec.post_norms
                    && (len(&l.post_attn_norm) != Some(width) || len(&l.post_ffn_norm) != Some(width)))
        });
        let head_ok = lm_head
            .as_ref()
            .is_none_or(|h| B::linear_shape(h) == (vocab, width));
        if let Some(l) = bad_layer.or((!head_ok).then_some(usize::MAX)) {
            let at = match l {
                usize::MAX => "the output head".to_string(),
                l => format!("layer {l}"),
            };
            return Err(LlmError::Config {
                file: meta.architecture.clone(),
                reason: format!(
                    "in {at}, a tensor's shape disagrees with a width of {width}, {q} query heads and \
                     {kv} key/value heads of {dim} dimensions, or a norm or bias tensor is missing"
                ),
            });
        }
        let lm_head_bias = try_load!(optional(&["output.bias".to_string()]));
        let norm = try_load!(norm("output_norm"));
        Ok(Ok(Decoder {
            spec,
            hyper,
            meta,
            w: Weights {
                embedding,
                lm_head,
                lm_head_bias,
                norm,
                layers,
                ffn,
            },
        }))
    }
}

/// Which kernels run the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// The crate's own CPU blocks on a CPU device (when every tensor has one), else Candle's ops.
    #[default]
    Auto,
    /// Candle's tensor ops on the model's device, even on a CPU (the path GPUs take; tests run it here).
    Candle,
}

/// Loads the model the context's files hold, as architecture `spec`, on the fastest backend.
pub(crate) fn load(spec: Spec, ctx: &LoadContext) -> Result<LoadedModel> {
    let on_cpu = ctx.device.is_cpu() && ctx.kernels == Kernels::Auto;
    let unsupported = match ctx.files.gguf.is_some() {
        true => {
            let (content, file) = ctx.gguf()?;
            let hyper = || gguf::hyper(spec, &content, &file, &ctx.meta);
            if on_cpu {
                let src = gguf::CpuSource {
                    content: &content,
                    file: &file,
                };
                match Decoder::build(spec, checked(hyper()?)?, &src, ctx.meta.clone())? {
                    Ok(model) => return Ok(LoadedModel(Box::new(model))),
                    Err(why) => {
                        tracing::info!("CPU kernels cannot hold this model ({why:?}); Candle's ops run it")
                    }
                }
            }
            let src = gguf::DeviceSource::new(&content, &file, ctx.device);
            Decoder::build(spec, checked(hyper()?)?, &src, ctx.meta.clone())?
                .map(|m| LoadedModel(Box::new(device::DeviceDecoder::new(m, ctx.device))))
        }
        false => {
            let (config, prefix) = hf::text_config(ctx)?;
            let hyper = || hf::hyper(spec, &config, ctx.meta.context_length);
            let names = hf::Names::open(ctx, prefix, spec)?;
            if on_cpu {
                match Decoder::build(spec, checked(hyper()?)?, &names, ctx.meta.clone())? {
                    Ok(model) => return Ok(LoadedModel(Box::new(model))),
                    Err(why) => {
                        tracing::info!("CPU kernels cannot hold this model ({why:?}); Candle's ops run it")
                    }
                }
            }
            let src = hf::DeviceSource::new(&names, ctx.device, ctx.dtype);
            Decoder::build(spec, checked(hyper()?)?, &src, ctx.meta.clone())?
                .map(|m| LoadedModel(Box::new(device::DeviceDecoder::new(m, ctx.device))))
        }
    };
    unsupported.map_err(|why| refused(&ctx.meta, why))
}

/// The sizes, or the error that names what this decoder does not do.
fn checked(hyper: std::result::Result<Hyper, Unsupported>) -> Result<Hyper> {
    hyper.map_err(|why| LlmError::Config {
        file: "model config".into(),
        reason: format!("not supported: {}", describe(&why)),
    })
}

fn refused(meta: &ModelMeta, why: Unsupported) -> LlmError {
    LlmError::Config {
        file: meta.architecture.clone(),
        reason: format!("not supported: {}", describe(&why)),
    }
}

fn describe(why: &Unsupported) -> String {
    match why {
        Unsupported::Type(t) => format!("tensors of GGML type {t:?}"),
        Unsupported::MixedTypes => "stacked tensors of different types".into(),
        Unsupported::Feature(f) => f.clone(),
    }
}
