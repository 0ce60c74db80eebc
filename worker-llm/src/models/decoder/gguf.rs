//! The decoder's tensors and sizes from a GGUF file (names and metadata keys as llama.cpp writes them).

use candle_core::quantized::gguf_file::Content;

use super::{CpuDecoder, Hyper, Loaded, Source, Spec};
use crate::cpu::ops::{Heads, Rope};
use crate::cpu::{Linear, Matrix, vector};
use crate::error::{LlmError, Result};
use crate::files::{ModelMeta, gguf_u64};

/// A GGUF file's tensors, read in their GGML blocks.
struct GgufSource<'a> {
    content: &'a Content,
    file: &'a std::fs::File,
}

impl Source for GgufSource<'_> {
    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn matrix(&self, names: &[&str]) -> Loaded<Matrix> {
        Matrix::load(self.content, self.file, names)
    }

    fn linear(&self, names: &[&str]) -> Loaded<Linear> {
        Linear::load(self.content, self.file, names)
    }

    fn vector(&self, name: &str) -> Loaded<Vec<f32>> {
        vector(self.content, self.file, name)
    }
}

/// Sizes and attention of the model from `{arch}.*` metadata.
fn hyper(spec: Spec, content: &Content, file: &std::fs::File, arch: &str) -> Loaded<Hyper> {
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
    let layers = int("block_count").ok_or_else(|| missing("block_count"))?;
    let width = int("embedding_length").ok_or_else(|| missing("embedding_length"))?;
    let q_heads = int("attention.head_count").ok_or_else(|| missing("attention.head_count"))?;
    let kv_heads = int("attention.head_count_kv").unwrap_or(q_heads);
    let head_dim = int("attention.key_length").unwrap_or(width / q_heads.max(1));
    let heads = checked_heads(q_heads, kv_heads, head_dim, "GGUF")?;
    let rope_dims = int("rope.dimension_count").unwrap_or(head_dim).min(head_dim);
    let theta = float("rope.freq_base").unwrap_or(10_000.0) as f64;
    let factors = match content.tensor_infos.contains_key("rope_freqs.weight") {
        true => match vector(content, file, "rope_freqs.weight")? {
            Ok(v) => Some(v),
            Err(unsupported) => return Ok(Err(unsupported)),
        },
        false => None,
    };
    // Phi-3's long-context factors come with an attention factor this decoder does not apply.
    if content.tensor_infos.contains_key("rope_factors_long.weight") {
        return Ok(Err(crate::cpu::Unsupported::Feature(
            "Phi-3 long-context rope".into(),
        )));
    }
    // llama.cpp applies a GGUF's sliding window only where the architecture has a layer pattern
    // (Gemma 3); it ignores Phi-3's.
    let window = int("attention.sliding_window");
    let pattern = spec
        .sliding_pattern
        .map(|default| int("attention.sliding_window_type").unwrap_or(default).max(1));
    let windows = (0..layers)
        .map(|l| window.filter(|_| pattern.is_some_and(|n| (l + 1) % n != 0)))
        .collect();
    let local_theta = float("rope.local_freq_base").unwrap_or(10_000.0) as f64;
    Ok(Ok(Hyper {
        layers,
        heads,
        eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        rope: Rope::new(rope_dims, theta, factors.as_deref()),
        local_rope: pattern.map(|_| Rope::new(rope_dims, local_theta, None)),
        windows,
        attn_scale: 1.0 / (head_dim as f32).sqrt(),
        attn_softcap: float("attn_logit_softcapping").filter(|c| *c > 0.0),
        final_softcap: float("final_logit_softcapping").filter(|c| *c > 0.0),
    }))
}

/// Grouped heads that divide evenly and a head of an even size, or a config error naming `file`.
pub(super) fn checked_heads(q: usize, kv: usize, dim: usize, file: &str) -> Result<Heads> {
    if q == 0 || kv == 0 || q % kv != 0 || dim == 0 || dim % 2 != 0 {
        return Err(LlmError::Config {
            file: file.into(),
            reason: format!("{q} query heads, {kv} key/value heads of {dim} dimensions"),
        });
    }
    Ok(Heads { q, kv, dim })
}

impl CpuDecoder {
    /// The GGUF model in `content`; `Ok(Err(..))` when a tensor's type has no CPU kernel here.
    pub(crate) fn load(
        spec: Spec,
        content: &Content,
        file: &std::fs::File,
        meta: ModelMeta,
    ) -> Loaded<CpuDecoder> {
        let hyper = match hyper(spec, content, file, &meta.architecture)? {
            Ok(h) => h,
            Err(unsupported) => return Ok(Err(unsupported)),
        };
        CpuDecoder::build(spec, hyper, &GgufSource { content, file }, meta)
    }
}

/// The model on the CPU decoder, when the device is the CPU and every tensor has a kernel here; `None`
/// sends the caller to Candle's model (GPUs, GGML types without a CPU kernel).
pub(crate) fn on_cpu(
    spec: Spec,
    ctx: &crate::models::LoadContext,
    content: &Content,
    file: &std::fs::File,
) -> Result<Option<crate::models::LoadedModel>> {
    if !ctx.device.is_cpu() {
        return Ok(None);
    }
    Ok(CpuDecoder::load(spec, content, file, ctx.meta.clone())?
        .ok()
        .map(|model| crate::models::LoadedModel::Batched(Box::new(model))))
}
