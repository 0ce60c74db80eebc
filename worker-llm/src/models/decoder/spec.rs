//! How an architecture differs from Llama ([`Spec`], one constant per architecture) and its sizes and
//! per-layer attention ([`Hyper`], read from GGUF metadata or config.json).

use crate::cpu::ops::{Heads, Rope};

/// How dimensions are paired by the rotary embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RopeStyle {
    /// (2i, 2i+1): GGML's "normal" rope (Llama GGUF files store Q and K permuted for it).
    Interleaved,
    /// (i, i + d/2): GPT-NeoX's (Qwen, Gemma, Phi-3, and every HuggingFace checkpoint).
    Neox,
}

/// The MLP's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// SiLU: SwiGLU when gated (Llama, Qwen, Phi-3).
    Silu,
    /// GELU with the tanh approximation: GeGLU when gated (Gemma), plain in Phi-2.
    GeluTanh,
}

/// The normalisation before attention, MLP and output head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NormKind {
    /// RMSNorm (every architecture but Phi-2).
    Rms,
    /// LayerNorm with a bias (Phi-2).
    Layer,
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
    /// GGUF sliding-window layers: all but every `n`-th layer (Gemma 3: 5 of 6), with their own
    /// rotary base (`rope.local_freq_base`, default 10000). HuggingFace configs list `layer_types`.
    pub(crate) sliding_pattern: Option<usize>,
    /// HuggingFace checkpoints store every norm's scale minus one (Gemma's `1 + w`; GGUF files hold
    /// the sum).
    pub(crate) norms_minus_one: bool,
    pub(crate) norm: NormKind,
    /// Attention and MLP read the same normed input and both add to the residual (Phi-2).
    pub(crate) parallel: bool,
    /// The MLP is `down(act(gate) * up)`; else `down(act(up))` (Phi-2).
    pub(crate) gated: bool,
}

impl Spec {
    /// Llama, Mistral, SmolLM, TinyLlama as GGUF files store them.
    pub(crate) const LLAMA: Spec = Spec {
        rope: RopeStyle::Interleaved,
        qk_norm: false,
        post_norms: false,
        embed_scale: false,
        activation: Activation::Silu,
        qkv_bias: false,
        sliding_pattern: None,
        norms_minus_one: false,
        norm: NormKind::Rms,
        parallel: false,
        gated: true,
    };
    /// Llama and Mistral as HuggingFace checkpoints store them (Q and K not permuted).
    pub(crate) const LLAMA_HF: Spec = Spec {
        rope: RopeStyle::Neox,
        ..Spec::LLAMA
    };
    /// Phi-1, Phi-1.5 and Phi-2: LayerNorm, attention and MLP in parallel, a plain GELU MLP, biases on
    /// every projection, a partial rotary embedding (from the config).
    pub(crate) const PHI2: Spec = Spec {
        rope: RopeStyle::Neox,
        activation: Activation::GeluTanh,
        norm: NormKind::Layer,
        parallel: true,
        gated: false,
        ..Spec::LLAMA
    };
    /// Phi-3 (Q, K and V in one tensor, gate and up in another: the loader takes either).
    pub(crate) const PHI3: Spec = Spec::LLAMA_HF;
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
    /// Gemma (1).
    pub(crate) const GEMMA: Spec = Spec {
        rope: RopeStyle::Neox,
        embed_scale: true,
        activation: Activation::GeluTanh,
        norms_minus_one: true,
        ..Spec::LLAMA
    };
    /// Gemma 2 (its soft-capping and alternating sliding layers come from the config).
    pub(crate) const GEMMA2: Spec = Spec {
        post_norms: true,
        ..Spec::GEMMA
    };
    /// Gemma 3 (text).
    pub(crate) const GEMMA3: Spec = Spec {
        qk_norm: true,
        post_norms: true,
        sliding_pattern: Some(6),
        ..Spec::GEMMA
    };
}

/// An architecture's sizes and per-layer attention, read from GGUF metadata or config.json.
pub(crate) struct Hyper {
    pub(crate) layers: usize,
    pub(crate) heads: Heads,
    pub(crate) eps: f32,
    pub(crate) rope: Rope,
    /// The rotary embedding of sliding-window layers, when it differs (Gemma 3).
    pub(crate) local_rope: Option<Rope>,
    /// Per layer: the window of a sliding-window layer, `None` for a global one.
    pub(crate) windows: Vec<Option<usize>>,
    /// Multiplies attention scores (1/sqrt(head_dim) unless the config says otherwise).
    pub(crate) attn_scale: f32,
    /// `cap * tanh(score / cap)` on attention scores (Gemma 2).
    pub(crate) attn_softcap: Option<f32>,
    /// `cap * tanh(logit / cap)` on the output logits (Gemma 2).
    pub(crate) final_softcap: Option<f32>,
}
