//! The decoder's tensors and sizes from a HuggingFace checkpoint: safetensors weights under
//! transformers' names, mapped to GGUF's, and config.json read as transformers reads it (its
//! `layer_types`, `rope_parameters` or older `rope_scaling`, `query_pre_attn_scalar`, soft-capping).

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use serde_json::Value;

use super::gguf::checked_heads;
use super::{CpuDecoder, Hyper, Loaded, Source, Spec};
use crate::cpu::ops::Rope;
use crate::cpu::{Linear, Matrix, Unsupported};
use crate::error::{LlmError, Result};
use crate::models::{LoadContext, LoadedModel};

/// Safetensors shards, read as f32 under GGUF's tensor names.
struct HfSource {
    tensors: MmapedSafetensors,
    /// `language_model.` for the text part of a multimodal checkpoint, else empty.
    prefix: String,
    spec: Spec,
}

impl HfSource {
    /// The transformers name of a GGUF tensor name.
    fn name(&self, gguf: &str) -> String {
        let p = &self.prefix;
        let name = match gguf {
            "token_embd.weight" => "model.embed_tokens.weight".to_string(),
            "output_norm.weight" => "model.norm.weight".to_string(),
            "output.weight" => "lm_head.weight".to_string(),
            _ => {
                let Some(rest) = gguf.strip_prefix("blk.") else {
                    return format!("{p}{gguf}");
                };
                let (layer, tensor) = rest.split_once('.').unwrap_or((rest, ""));
                let (base, kind) = tensor.rsplit_once('.').unwrap_or((tensor, "weight"));
                let post_norms = self.spec.post_norms;
                let hf = match base {
                    "attn_norm" => "input_layernorm",
                    "attn_q" => "self_attn.q_proj",
                    "attn_k" => "self_attn.k_proj",
                    "attn_v" => "self_attn.v_proj",
                    "attn_qkv" => "self_attn.qkv_proj",
                    "attn_output" => "self_attn.o_proj",
                    "attn_q_norm" => "self_attn.q_norm",
                    "attn_k_norm" => "self_attn.k_norm",
                    "post_attention_norm" if post_norms => "post_attention_layernorm",
                    "ffn_norm" if post_norms => "pre_feedforward_layernorm",
                    "ffn_norm" => "post_attention_layernorm",
                    "post_ffw_norm" => "post_feedforward_layernorm",
                    "ffn_gate" => "mlp.gate_proj",
                    // Phi-3 keeps gate and up in one tensor, where GGUF names the pair `ffn_up`.
                    "ffn_up" if !self.has_raw(&format!("model.layers.{layer}.mlp.up_proj.weight")) => {
                        "mlp.gate_up_proj"
                    }
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

    /// The tensor as f32 with its shape, rows first.
    fn load(&self, gguf: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let name = self.name(gguf);
        let tensor = self.tensors.load(&name, &Device::Cpu)?;
        let dims = tensor.dims().to_vec();
        let data = tensor.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok((dims, data))
    }
}

impl Source for HfSource {
    fn has(&self, name: &str) -> bool {
        self.tensors.get(&self.name(name)).is_ok()
    }

    fn matrix(&self, names: &[&str]) -> Loaded<Matrix> {
        let (mut rows, mut cols, mut data) = (0, None, Vec::new());
        for name in names {
            let (dims, values) = self.load(name)?;
            let [r, c] = dims[..] else {
                return Err(LlmError::Config {
                    file: "safetensors".into(),
                    reason: format!("tensor `{}` has shape {dims:?}, not a matrix", self.name(name)),
                });
            };
            if cols.is_some_and(|cols| cols != c) {
                return Err(LlmError::Config {
                    file: "safetensors".into(),
                    reason: format!("tensor `{}` has {c} columns, not {cols:?}", self.name(name)),
                });
            }
            cols = Some(c);
            rows += r;
            data.extend(values);
        }
        Ok(Ok(Matrix::from_f32(rows, cols.unwrap_or(0), data)))
    }

    fn linear(&self, names: &[&str]) -> Loaded<Linear> {
        Ok(self.matrix(names)?.map(Linear::from))
    }

    fn vector(&self, name: &str) -> Loaded<Vec<f32>> {
        let (_, mut v) = self.load(name)?;
        if self.spec.norms_minus_one && name.contains("norm") {
            v.iter_mut().for_each(|x| *x += 1.0);
        }
        Ok(Ok(v))
    }
}

/// Sizes and attention of the model from config.json (the `text_config` of a multimodal one).
fn hyper(spec: Spec, config: &Value, file: &str) -> Loaded<Hyper> {
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
    let rope = match rope(rope_dims, theta, global_params) {
        Ok(r) => r,
        Err(unsupported) => return Ok(Err(unsupported)),
    };
    let local_rope = match (typed("sliding_attention"), float("rope_local_base_freq")) {
        (Some(p), _) => {
            let theta = p.get("rope_theta").and_then(Value::as_f64).unwrap_or(10_000.0);
            match self::rope(rope_dims, theta, Some(p)) {
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
        eps: float("rms_norm_eps").unwrap_or(1e-6) as f32,
        rope,
        local_rope,
        windows,
        attn_scale: 1.0 / (float("query_pre_attn_scalar").unwrap_or(head_dim as f64) as f32).sqrt(),
        attn_softcap: positive("attn_logit_softcapping"),
        final_softcap: positive("final_logit_softcapping"),
    }))
}

/// The rotary embedding of `params` (`rope_type` default, linear or llama3); others are refused.
fn rope(dims: usize, theta: f64, params: Option<&Value>) -> std::result::Result<Rope, Unsupported> {
    let get = |key: &str| params.and_then(|p| p.get(key)).and_then(Value::as_f64);
    let kind = params
        .and_then(|p| p.get("rope_type").or_else(|| p.get("type")))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let factor = get("factor").unwrap_or(1.0);
    let inv_freq = |i: usize| theta.powf(-2.0 * i as f64 / dims as f64);
    let factors: Option<Vec<f32>> = match kind {
        "default" => None,
        "linear" => Some(vec![factor as f32; dims / 2]),
        // Llama 3.1's: low frequencies slowed by `factor`, high ones kept, a smooth ramp between
        // (the same numbers llama.cpp's converter writes as `rope_freqs.weight`).
        "llama3" => {
            let low = get("low_freq_factor").unwrap_or(1.0);
            let high = get("high_freq_factor").unwrap_or(4.0);
            let old = get("original_max_position_embeddings").unwrap_or(8192.0);
            let (low_wavelen, high_wavelen) = (old / low, old / high);
            Some(
                (0..dims / 2)
                    .map(|i| {
                        let wavelen = 2.0 * std::f64::consts::PI / inv_freq(i);
                        if wavelen < high_wavelen {
                            1.0
                        } else if wavelen > low_wavelen {
                            factor as f32
                        } else {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
                        }
                    })
                    .collect(),
            )
        }
        other => return Err(Unsupported::Feature(format!("rope type {other}"))),
    };
    Ok(Rope::new(dims, theta, factors.as_deref()))
}

/// The safetensors model on the CPU decoder, when the device is the CPU and the architecture has
/// nothing this decoder lacks; `None` sends the caller to Candle's model.
pub(crate) fn on_cpu(spec: Spec, ctx: &LoadContext) -> Result<Option<LoadedModel>> {
    if !ctx.device.is_cpu() {
        return Ok(None);
    }
    let raw: Value = ctx.files.config_as()?;
    // Multimodal checkpoints nest the language model's config and prefix its weights.
    let (config, prefix) = match raw.get("text_config") {
        Some(text) => (text.clone(), "language_model.".to_string()),
        None => (raw, String::new()),
    };
    let hyper = match hyper(spec, &config, "config.json")? {
        Ok(h) => h,
        Err(_) => return Ok(None),
    };
    // SAFETY: the files are memory-mapped read-only; like every Candle loader we assume nobody
    // truncates them while they are read.
    let tensors = unsafe { MmapedSafetensors::multi(&ctx.files.safetensors)? };
    let source = HfSource {
        tensors,
        prefix,
        spec,
    };
    Ok(CpuDecoder::build(spec, hyper, &source, ctx.meta.clone())?
        .ok()
        .map(|model| LoadedModel::Batched(Box::new(model))))
}
