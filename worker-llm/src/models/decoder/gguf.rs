//! The decoder's tensors and sizes from a GGUF file (names and metadata keys as llama.cpp writes them),
//! for the CPU blocks ([`CpuSource`]) and for Candle's ops on a device ([`DeviceSource`]).

use std::sync::Arc;

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};

use super::cpu::Cpu;
use super::device::{Dev, DevLinear, DevTable};
use super::{Hyper, Loaded, Source, Spec, rope};
use crate::cpu::ops::{Heads, Rope};
use crate::cpu::{Linear, Matrix, Unsupported, vector};
use crate::error::{LlmError, Result};
use crate::files::{ModelMeta, gguf_u64};

/// A GGUF file's tensors, read in their GGML blocks.
pub(super) struct CpuSource<'a> {
    pub(super) content: &'a Content,
    pub(super) file: &'a std::fs::File,
}

impl Source<Cpu> for CpuSource<'_> {
    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn linear(&self, names: &[&str]) -> Loaded<Linear> {
        Linear::load(self.content, self.file, names)
    }

    fn table(&self, name: &str) -> Loaded<Matrix> {
        Matrix::load(self.content, self.file, &[name])
    }

    fn vector(&self, names: &[&str]) -> Loaded<Vec<f32>> {
        let mut out = Vec::new();
        for name in names {
            match vector(self.content, self.file, name)? {
                Ok(v) => out.extend(v),
                Err(unsupported) => return Ok(Err(unsupported)),
            }
        }
        Ok(Ok(out))
    }
}

/// A GGUF file's tensors as Candle `QTensor`s on a device.
pub(super) struct DeviceSource<'a> {
    content: &'a Content,
    file: &'a std::fs::File,
    device: &'a Device,
}

impl<'a> DeviceSource<'a> {
    pub(super) fn new(content: &'a Content, file: &'a std::fs::File, device: &'a Device) -> Self {
        DeviceSource {
            content,
            file,
            device,
        }
    }

    fn qtensor(&self, name: &str) -> Result<QTensor> {
        let mut reader = self.file;
        self.content
            .tensor(&mut reader, name, self.device)
            .map_err(|e| LlmError::Config {
                file: "GGUF".into(),
                reason: format!("tensor `{name}`: {e}"),
            })
    }
}

/// Rows and columns of a 2-D (or 1-D) GGUF tensor.
fn shape(q: &QTensor) -> (usize, usize) {
    match q.shape().dims() {
        [cols] => (1, *cols),
        [rows, cols] => (*rows, *cols),
        _ => (0, 0),
    }
}

impl Source<Dev> for DeviceSource<'_> {
    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn linear(&self, names: &[&str]) -> Loaded<DevLinear> {
        let mut parts = Vec::with_capacity(names.len());
        for name in names {
            let q = self.qtensor(name)?;
            let (rows, cols) = shape(&q);
            parts.push((QMatMul::from_arc(Arc::new(q))?, rows, cols));
        }
        Ok(Ok(DevLinear::quantized(parts)))
    }

    fn table(&self, name: &str) -> Loaded<DevTable> {
        let q = Arc::new(self.qtensor(name)?);
        let (rows, cols) = shape(&q);
        let lookup = q.dequantize(self.device)?.to_dtype(DType::F32)?;
        let head = DevLinear::quantized(vec![(QMatMul::from_arc(q)?, rows, cols)]);
        Ok(Ok(DevTable { lookup, head }))
    }

    fn vector(&self, names: &[&str]) -> Loaded<Tensor> {
        let mut parts = Vec::with_capacity(names.len());
        for name in names {
            parts.push(
                self.qtensor(name)?
                    .dequantize(self.device)?
                    .to_dtype(DType::F32)?
                    .flatten_all()?,
            );
        }
        Ok(Ok(Tensor::cat(&parts, 0)?))
    }
}

/// Sizes and attention of the model from `{arch}.*` metadata; `Ok(Err(..))` names a rotary scaling
/// this decoder does not do.
pub(super) fn hyper(spec: Spec, content: &Content, file: &std::fs::File, meta: &ModelMeta) -> Loaded<Hyper> {
    let arch = &meta.architecture;
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
    let factors = |name: &str| -> Loaded<Option<Vec<f32>>> {
        match content.tensor_infos.contains_key(name) {
            true => Ok(vector(content, file, name)?.map(Some)),
            false => Ok(Ok(None)),
        }
    };
    let kind = content
        .metadata
        .get(&format!("{arch}.rope.scaling.type"))
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_else(|| "none".into());
    let factor = float("rope.scaling.factor").map(f64::from).filter(|f| *f > 0.0);
    let original = int("rope.scaling.original_context_length").map(|o| o as f64);
    let attn_factor = float("rope.scaling.attn_factor").map(f64::from);
    let rope = if content.tensor_infos.contains_key("rope_factors_long.weight") {
        // Phi-3's LongRoPE: one factor per rotated pair, long or short by the context served.
        let original = original.unwrap_or(meta.context_length as f64);
        let key = match rope::longrope_key(meta.context_length, original) {
            "long_factor" => "rope_factors_long.weight",
            _ => "rope_factors_short.weight",
        };
        let chosen = match factors(key)? {
            Ok(Some(f)) if f.len() == rope_dims / 2 => f,
            Ok(_) => {
                return Ok(Err(Unsupported::Feature(format!(
                    "`{key}` missing or not {} long",
                    rope_dims / 2
                ))));
            }
            Err(u) => return Ok(Err(u)),
        };
        let chosen: Vec<f64> = chosen.iter().map(|&f| f as f64).collect();
        Rope::from_inv_freq(
            rope::longrope(rope_dims, theta, &chosen),
            attn_factor.unwrap_or(1.0),
        )
    } else {
        match kind.as_str() {
            "yarn" => {
                let (Some(factor), Some(original)) = (factor, original) else {
                    return Ok(Err(Unsupported::Feature(
                        "yarn rope without a factor and an original context length".into(),
                    )));
                };
                let betas = (
                    float("rope.scaling.yarn_beta_fast").map_or(32.0, f64::from),
                    float("rope.scaling.yarn_beta_slow").map_or(1.0, f64::from),
                );
                // ggml multiplies the file's attention factor by YaRN's own `0.1 ln(factor) + 1`.
                let attention = attn_factor.unwrap_or(1.0) * rope::yarn_default_attention(factor);
                rope::yarn(rope_dims, theta, factor, original, betas, true, attention)
            }
            "linear" => Rope::new(
                rope_dims,
                theta,
                Some(&vec![factor.unwrap_or(1.0) as f32; rope_dims / 2]),
            ),
            // Llama 3.1's scaling comes as frequency factors (`rope_freqs.weight`).
            "none" | "" => match factors("rope_freqs.weight")? {
                Ok(f) => Rope::new(rope_dims, theta, f.as_deref()),
                Err(u) => return Ok(Err(u)),
            },
            other => return Ok(Err(Unsupported::Feature(format!("rope scaling `{other}`")))),
        }
    };
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
    let eps = float("attention.layer_norm_rms_epsilon")
        .or(float("attention.layer_norm_epsilon"))
        .unwrap_or(1e-5);
    Ok(Ok(Hyper {
        layers,
        heads,
        eps,
        rope,
        local_rope: pattern.map(|_| Rope::new(rope_dims, local_theta, None)),
        windows,
        attn_scale: 1.0 / (head_dim as f32).sqrt(),
        attn_softcap: float("attn_logit_softcapping").filter(|c| *c > 0.0),
        final_softcap: float("final_logit_softcapping").filter(|c| *c > 0.0),
    }))
}

/// Grouped heads that divide evenly and a head of an even size, or a config error naming `file`.
pub(super) fn checked_heads(q: usize, kv: usize, dim: usize, file: &str) -> Result<Heads> {
    if q == 0 || kv == 0 || !q.is_multiple_of(kv) || dim == 0 || !dim.is_multiple_of(2) {
        return Err(LlmError::Config {
            file: file.into(),
            reason: format!("{q} query heads, {kv} key/value heads of {dim} dimensions"),
        });
    }
    Ok(Heads { q, kv, dim })
}
