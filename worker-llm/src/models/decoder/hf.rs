//! The decoder's tensors and sizes from a HuggingFace checkpoint: safetensors weights under
//! transformers' names, mapped to GGUF's, and config.json read as transformers reads it (its
//! `layer_types`, `rope_parameters` or older `rope_scaling`, `query_pre_attn_scalar`, soft-capping).

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::cpu::Cpu;
use super::device::{Dev, DevLinear, DevTable};
use super::gguf::checked_heads;
use super::{Hyper, Loaded, NormKind, Source, Spec, rope};
use crate::cpu::ops::Rope;
use crate::cpu::{Linear, Matrix};
use crate::error::{LlmError, Result};
use crate::models::LoadContext;

/// Safetensors shards, found under GGUF's tensor names; as a [`Source`] they are read as f32 for the
/// CPU blocks.
pub(super) struct Names {
    tensors: MmapedSafetensors,
    /// `language_model.` for the text part of a multimodal checkpoint, else empty.
    prefix: String,
    spec: Spec,
}

/// The language model's config (the `text_config` of a multimodal checkpoint) and its weights' prefix.
pub(super) fn text_config(ctx: &LoadContext) -> Result<(Value, String)> {
    let raw: Value = ctx.files.config_as()?;
    Ok(match raw.get("text_config") {
        Some(text) => (text.clone(), "language_model.".to_string()),
        None => (raw, String::new()),
    })
}

impl Names {
    /// Memory-maps the checkpoint's shards.
    pub(super) fn open(ctx: &LoadContext, prefix: String, spec: Spec) -> Result<Names> {
        // SAFETY: the files are memory-mapped read-only; like every Candle loader we assume nobody
        // truncates them while they are read.
        let tensors = unsafe { MmapedSafetensors::multi(&ctx.files.safetensors)? };
        Ok(Names {
            tensors,
            prefix,
            spec,
        })
    }

    /// The transformers name of a GGUF tensor name.
    fn name(&self, gguf: &str) -> String {
        let p = &self.prefix;
        let layer_norm = self.spec.norm == NormKind::Layer;
        let name = match gguf.rsplit_once('.') {
            Some(("token_embd", kind)) => format!("model.embed_tokens.{kind}"),
            Some(("output_norm", kind)) if layer_norm => format!("model.final_layernorm.{kind}"),
            Some(("output_norm", kind)) => format!("model.norm.{kind}"),
            Some(("output", kind)) => format!("lm_head.{kind}"),
            _ => {
                let Some(rest) = gguf.strip_prefix("blk.") else {
                    return format!("{p}{gguf}");
                };
                let (layer, tensor) = rest.split_once('.').unwrap_or((rest, ""));
                let (base, kind) = tensor.rsplit_once('.').unwrap_or((tensor, "weight"));
                let post_norms = self.spec.post_norms;
                let has = |hf: &str| self.has_raw(&format!("model.layers.{layer}.{hf}.weight"));
                let hf = match base {
                    "attn_norm" => "input_layernorm",
                    "attn_q" => "self_attn.q_proj",
                    "attn_k" => "self_attn.k_proj",
                    "attn_v" => "self_attn.v_proj",
                    "attn_qkv" => "self_attn.qkv_proj",
                    // Phi-2 names it `dense`.
                    "attn_output" if has("self_attn.dense") => "self_attn.dense",
                    "attn_output" => "self_attn.o_proj",
                    "attn_q_norm" => "self_attn.q_norm",
                    "attn_k_norm" => "self_attn.k_norm",
                    "post_attention_norm" if post_norms => "post_attention_layernorm",
                    "ffn_norm" if post_norms => "pre_feedforward_layernorm",
                    "ffn_norm" => "post_attention_layernorm",
                    "post_ffw_norm" => "post_feedforward_layernorm",
                    "ffn_gate" => "mlp.gate_proj",
                    "ffn_up" if has("mlp.up_proj") => "mlp.up_proj",
                    // Phi-3 keeps gate and up in one tensor, where GGUF names the pair `ffn_up`.
                    "ffn_up" if has("mlp.gate_up_proj") => "mlp.gate_up_proj",
                    // Phi-2's plain MLP.
                    "ffn_up" if has("mlp.fc1") => "mlp.fc1",
                    "ffn_down" if has("mlp.fc2") => "mlp.fc2",
                    "ffn_up" => "mlp.up_proj",
                    "ffn_down" => "mlp.down_proj",
                    other => other,
                };
                format!("model.layers.{layer}.{hf}.{kind}")
            }
        };
        format!("{p}{name}")
    }

    fn has_raw(&self, name: &str) -> bool {
        self.tensors.get(&format!("{}{name}", self.prefix)).is_ok()
    }

    /// The tensor as Candle loads it, on the CPU, in its file's dtype.
    fn raw(&self, gguf: &str) -> Result<Tensor> {
        Ok(self.tensors.load(&self.name(gguf), &Device::Cpu)?)
    }

    /// The named matrices stacked by rows, checked to share their columns.
    fn stacked(&self, names: &[&str]) -> Result<Tensor> {
        let mut parts = Vec::with_capacity(names.len());
        for name in names {
            let t = self.raw(name)?;
            if t.rank() != 2
                || parts
                    .first()
                    .is_some_and(|p: &Tensor| p.dim(1).ok() != t.dim(1).ok())
            {
                return Err(LlmError::Config {
                    file: "safetensors".into(),
                    reason: format!(
                        "tensor `{}` has shape {:?}, not a matrix like the others",
                        self.name(name),
                        t.dims()
                    ),
                });
            }
            parts.push(t);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// The named 1-D weights, one after the other, as f32 (norm scales stored minus one fixed up).
    fn vectors(&self, names: &[&str]) -> Result<Tensor> {
        let mut parts = Vec::with_capacity(names.len());
        for name in names {
            let mut t = self.raw(name)?.to_dtype(DType::F32)?.flatten_all()?;
            if self.spec.norms_minus_one && name.contains("norm") {
                t = (t + 1.0)?;
            }
            parts.push(t);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }
}

fn f32_matrix(t: &Tensor) -> Result<Matrix> {
    let (rows, cols) = t.dims2()?;
    let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(Matrix::from_f32(rows, cols, data))
}

impl Source<Cpu> for Names {
    fn has(&self, name: &str) -> bool {
        self.tensors.get(&self.name(name)).is_ok()
    }

    fn linear(&self, names: &[&str]) -> Loaded<Linear> {
        Ok(Ok(Linear::from(f32_matrix(&self.stacked(names)?)?)))
    }

    fn table(&self, name: &str) -> Loaded<Matrix> {
        Ok(Ok(f32_matrix(&self.stacked(&[name])?)?))
    }

    fn vector(&self, names: &[&str]) -> Loaded<Vec<f32>> {
        Ok(Ok(self.vectors(names)?.to_vec1::<f32>()?))
    }
}

/// The checkpoint's tensors on a device, matrices in the device's dtype (bf16 on GPUs).
pub(super) struct DeviceSource<'a> {
    names: &'a Names,
    device: &'a Device,
    dtype: DType,
}

impl<'a> DeviceSource<'a> {
    pub(super) fn new(names: &'a Names, device: &'a Device, dtype: DType) -> Self {
        DeviceSource { names, device, dtype }
    }
}

impl Source<Dev> for DeviceSource<'_> {
    fn has(&self, name: &str) -> bool {
        Source::<Cpu>::has(self.names, name)
    }

    fn linear(&self, names: &[&str]) -> Loaded<DevLinear> {
        let w = self
            .names
            .stacked(names)?
            .to_dtype(self.dtype)?
            .to_device(self.device)?;
        Ok(Ok(DevLinear::dense(w)?))
    }

    fn table(&self, name: &str) -> Loaded<DevTable> {
        let w = self
            .names
            .stacked(&[name])?
            .to_dtype(self.dtype)?
            .to_device(self.device)?;
        Ok(Ok(DevTable {
            lookup: w.to_dtype(DType::F32)?,
            head: DevLinear::dense(w)?,
        }))
    }

    fn vector(&self, names: &[&str]) -> Loaded<Tensor> {
        Ok(Ok(self.names.vectors(names)?.to_device(self.device)?))
    }
}

/// Sizes and attention of the model from config.json (the `text_config` of a multimodal one).
/// `context` is the context this worker serves (LongRoPE picks its factors by it).
pub(super) fn hyper(spec: Spec, config: &Value, context: usize) -> Loaded<Hyper> {
    let file = "config.json";
    let int = |key: &str| config.get(key).and_then(Value::as_u64).map(|v| v as usize);
    let float = |key: &str| config.get(key).and_then(Value::as_f64);
    let missing = |key: &str| LlmError::Config {
        file: file.into(),
        reason: format!("no integer `{key}`"),
    };
    let layers = int("num_hidden_layers").ok_or_else(|| missing("num_hidden_layers"))?;
    let width = int("hidden_size").ok_or_else(|| missing("hidden_size"))?;
    let q_heads = int("num_attention_heads").ok_or_else(|| missing("num_attention_heads"))?;
    let kv_heads = int("num_key_value_heads").unwrap_or(q_heads);
    let head_dim = int("head_dim").unwrap_or(width / q_heads.max(1));
    let heads = checked_heads(q_heads, kv_heads, head_dim, file)?;

    // transformers 5 writes `rope_parameters` (per layer type for Gemma 3); older configs
    // `rope_theta` and `rope_scaling`.
    let params = config.get("rope_parameters");
    let typed = |kind: &str| params.and_then(|p| p.get(kind));
    let global_params = typed("full_attention")
        .or(params)
        .or_else(|| config.get("rope_scaling").filter(|v| !v.is_null()));
    let partial = global_params
        .and_then(|p| p.get("partial_rotary_factor"))
        .and_then(Value::as_f64)
        .or_else(|| float("partial_rotary_factor"))
        .unwrap_or(1.0);
    let rope_dims = ((head_dim as f64 * partial) as usize).min(head_dim) & !1;
    let theta = global_params
        .and_then(|p| p.get("rope_theta"))
        .and_then(Value::as_f64)
        .or_else(|| float("rope_theta"))
        .unwrap_or(10_000.0);
    let (max_positions, original) = (
        float("max_position_embeddings"),
        float("original_max_position_embeddings"),
    );
    let rope = match rope::from_config(rope_dims, theta, global_params, max_positions, original, context) {
        Ok(r) => r,
        Err(unsupported) => return Ok(Err(unsupported)),
    };
    let local_rope = match (typed("sliding_attention"), float("rope_local_base_freq")) {
        (Some(p), _) => {
            let theta = p.get("rope_theta").and_then(Value::as_f64).unwrap_or(10_000.0);
            match rope::from_config(rope_dims, theta, Some(p), max_positions, original, context) {
                Ok(r) => Some(r),
                Err(unsupported) => return Ok(Err(unsupported)),
            }
        }
        (None, Some(theta)) => Some(Rope::new(rope_dims, theta, None)),
        (None, None) => None,
    };

    let window = int("sliding_window");
    let sliding: Vec<bool> = match config.get("layer_types").and_then(Value::as_array) {
        Some(types) => (0..layers)
            .map(|l| types.get(l).and_then(Value::as_str) == Some("sliding_attention"))
            .collect(),
        None => {
            let pattern = int("sliding_window_pattern").or(int("_sliding_window_pattern"));
            let use_window = config.get("use_sliding_window").and_then(Value::as_bool);
            (0..layers)
                .map(|l| match spec.sliding_pattern {
                    Some(default) => (l + 1) % pattern.unwrap_or(default).max(1) != 0,
                    // Gemma 2: even layers slide.
                    None if spec.post_norms => l % 2 == 0,
                    None => use_window != Some(false),
                })
                .collect()
        }
    };
    let windows = sliding.iter().map(|&s| window.filter(|_| s)).collect();
    let positive = |key: &str| float(key).filter(|c| *c > 0.0).map(|c| c as f32);
    Ok(Ok(Hyper {
        layers,
        heads,
        eps: float("rms_norm_eps").or(float("layer_norm_eps")).unwrap_or(1e-6) as f32,
        rope,
        local_rope,
        windows,
        attn_scale: 1.0 / (float("query_pre_attn_scalar").unwrap_or(head_dim as f64) as f32).sqrt(),
        attn_softcap: positive("attn_logit_softcapping"),
        final_softcap: positive("final_logit_softcapping"),
    }))
}
