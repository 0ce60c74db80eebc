//! `LlmConfig`: what a text-generation worker needs to know about a model before it opens a file.

use serde::{Deserialize, Serialize};

use super::{ModelConfig, ModelType, wrong_type};
use crate::compat::{Incompatibility, WorkerCapabilities};

/// Architecture family after normalization, so `LlamaForCausalLM` and GGUF `llama` land in one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "lowercase")]
pub enum ModelFamily {
    /// Llama 1/2/3.x and look-alikes (SmolLM, TinyLlama).
    Llama,
    /// Mistral 7B and derivatives.
    Mistral,
    /// Mixtral mixture-of-experts.
    Mixtral,
    /// Phi-1/1.5/2.
    Phi,
    /// Phi-3, Phi-3.5, Phi-4.
    Phi3,
    /// Qwen 2 and 2.5.
    Qwen2,
    /// Qwen 3.
    Qwen3,
    /// Gemma 1.
    Gemma,
    /// Gemma 2.
    Gemma2,
    /// Gemma 3.
    Gemma3,
    /// DeepSeek V2/V3.
    Deepseek2,
    /// Anything we do not recognise (also any family a newer version adds).
    #[serde(other)]
    Other,
}

impl ModelFamily {
    /// Every family, for tables and command-line choices.
    pub const ALL: [ModelFamily; 12] = [
        ModelFamily::Llama,
        ModelFamily::Mistral,
        ModelFamily::Mixtral,
        ModelFamily::Phi,
        ModelFamily::Phi3,
        ModelFamily::Qwen2,
        ModelFamily::Qwen3,
        ModelFamily::Gemma,
        ModelFamily::Gemma2,
        ModelFamily::Gemma3,
        ModelFamily::Deepseek2,
        ModelFamily::Other,
    ];

    /// The JSON name (`llama`, `phi3`...).
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFamily::Llama => "llama",
            ModelFamily::Mistral => "mistral",
            ModelFamily::Mixtral => "mixtral",
            ModelFamily::Phi => "phi",
            ModelFamily::Phi3 => "phi3",
            ModelFamily::Qwen2 => "qwen2",
            ModelFamily::Qwen3 => "qwen3",
            ModelFamily::Gemma => "gemma",
            ModelFamily::Gemma2 => "gemma2",
            ModelFamily::Gemma3 => "gemma3",
            ModelFamily::Deepseek2 => "deepseek2",
            ModelFamily::Other => "other",
        }
    }

    /// Normalizes an architecture as sources name it: a transformers class (`Qwen2ForCausalLM`), a
    /// config `model_type` (`qwen2`) or a GGUF `general.architecture` (`gemma3`).
    pub fn from_architecture(name: &str) -> ModelFamily {
        let n = name.to_ascii_lowercase();
        let n = n
            .strip_suffix("forcausallm")
            .or_else(|| n.strip_suffix("forconditionalgeneration"))
            .unwrap_or(&n);
        let n = n.strip_suffix("model").unwrap_or(n);
        let n = n.strip_suffix("_text").unwrap_or(n);
        match n {
            "llama" | "llama2" | "llama3" | "llama4" => ModelFamily::Llama,
            "mistral" => ModelFamily::Mistral,
            "mixtral" => ModelFamily::Mixtral,
            "phi" | "phi-msft" | "phi1" | "phi2" => ModelFamily::Phi,
            "phi3" | "phi4" => ModelFamily::Phi3,
            "qwen2" => ModelFamily::Qwen2,
            "qwen3" => ModelFamily::Qwen3,
            "gemma" => ModelFamily::Gemma,
            "gemma2" => ModelFamily::Gemma2,
            "gemma3" => ModelFamily::Gemma3,
            "deepseek2" | "deepseekv2" | "deepseek_v2" | "deepseekv3" | "deepseek_v3" => {
                ModelFamily::Deepseek2
            }
            _ => ModelFamily::Other,
        }
    }
}

impl std::fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the weights are stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "lowercase")]
pub enum WeightFormat {
    /// `.safetensors`, single or sharded.
    Safetensors,
    /// llama.cpp's GGUF.
    Gguf,
    /// PyTorch pickle (`.bin`, `.pt`): listed so we can refuse it with a reason.
    Pickle,
    /// Unknown or a format no worker reads (ONNX, MLX...).
    #[serde(other)]
    Other,
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WeightFormat::Safetensors => "safetensors",
            WeightFormat::Gguf => "gguf",
            WeightFormat::Pickle => "pickle",
            WeightFormat::Other => "other",
        })
    }
}

/// Whether the source makes people accept terms before downloading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "lowercase")]
pub enum Gated {
    /// Anyone may download.
    #[default]
    Open,
    /// Access is granted automatically once the user accepts the terms.
    Auto,
    /// Access is granted by the authors by hand.
    Manual,
}

/// Special tokens and the chat template: what turns messages into token ids and back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "camelCase", default)]
pub struct TokenizerInfo {
    /// Beginning-of-sequence token text.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub bos: Option<String>,
    /// End-of-sequence token texts (chat models often stop on several).
    pub eos: Vec<String>,
    /// Padding token text.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub pad: Option<String>,
    /// Unknown-word token text.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub unk: Option<String>,
    /// Beginning-of-sequence token id, when the source gives ids.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub bos_id: Option<u32>,
    /// End-of-sequence token ids (from generation_config or GGUF metadata).
    pub eos_ids: Vec<u32>,
    /// Whether the tokenizer prepends BOS itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub add_bos_token: Option<bool>,
    /// The Jinja chat template the model was trained with.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub chat_template: Option<String>,
}

/// Sampling values the authors recommend (`generation_config.json`); every one optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "camelCase", default)]
pub struct SamplingDefaults {
    /// `do_sample`: false means greedy decoding.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub do_sample: Option<bool>,
    /// Softmax temperature.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub top_p: Option<f64>,
    /// Keep only the k most likely tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub top_k: Option<u32>,
    /// Drop tokens below this fraction of the top probability.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub min_p: Option<f64>,
    /// Multiplicative penalty on repeated tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub repetition_penalty: Option<f64>,
    /// Default generation length.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub max_new_tokens: Option<u32>,
}

/// Metadata of a text-generation model, from the Hub, `config.json` and friends, or GGUF headers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "camelCase")]
pub struct LlmConfig {
    /// Architecture as the source names it (`LlamaForCausalLM`, GGUF `llama`), else the family's name.
    /// Always present (the catalog's store migrated older rows), so a UI never meets `undefined`.
    pub architecture: String,
    /// Normalized family; what workers dispatch on (`other` when unknown). Always present.
    pub model_family: ModelFamily,
    /// Weight file format.
    pub format: WeightFormat,
    /// Special tokens and chat template.
    #[serde(default)]
    pub tokenizer: TokenizerInfo,
    /// Maximum tokens of prompt plus output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub context_length: Option<u32>,
    /// Quantization or dtype of the weights (`Q4_K_M`, `BF16`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub quantization: Option<String>,
    /// Number of parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub parameter_count: Option<u64>,
    /// Transformer layers; with the head counts, sizes the KV cache for memory estimates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub num_layers: Option<u32>,
    /// Hidden width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub hidden_size: Option<u32>,
    /// Attention heads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub num_attention_heads: Option<u32>,
    /// Key/value heads (grouped-query attention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub num_kv_heads: Option<u32>,
    /// Vocabulary size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub vocab_size: Option<u32>,
    /// Recommended sampling values.
    #[serde(default)]
    pub sampling: SamplingDefaults,
    /// Languages the model card lists.
    #[serde(default)]
    pub languages: Vec<String>,
    /// The model this one was fine-tuned or quantized from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub base_model: Option<String>,
    /// License id (`apache-2.0`, `llama3.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub license: Option<String>,
    /// Source tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Whether downloading needs accepted terms (and `HF_TOKEN`).
    #[serde(default)]
    pub gated: Gated,
    /// Download count at the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub downloads: Option<u64>,
    /// Like count at the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub likes: Option<u64>,
}

impl LlmConfig {
    /// An empty config of the given family and format, for sources to fill in.
    pub fn new(model_family: ModelFamily, format: WeightFormat) -> Self {
        LlmConfig {
            architecture: model_family.as_str().to_string(),
            model_family,
            format,
            tokenizer: TokenizerInfo::default(),
            context_length: None,
            quantization: None,
            parameter_count: None,
            num_layers: None,
            hidden_size: None,
            num_attention_heads: None,
            num_kv_heads: None,
            vocab_size: None,
            sampling: SamplingDefaults::default(),
            languages: Vec::new(),
            base_model: None,
            license: None,
            tags: Vec::new(),
            gated: Gated::Open,
            downloads: None,
            likes: None,
        }
    }
}

/// Bits per weight of a quantization or dtype, as llama.cpp's formats store them (block scales
/// included); `None` for names we do not know.
pub fn bits_per_weight(quantization: &str) -> Option<f64> {
    let q = quantization.trim().to_ascii_uppercase();
    Some(match q.as_str() {
        "F32" | "FP32" | "FLOAT32" => 32.0,
        "F16" | "FP16" | "FLOAT16" | "BF16" | "BFLOAT16" => 16.0,
        "Q8_0" => 8.5,
        "Q6_K" => 6.5625,
        "Q5_0" | "Q5_K_S" => 5.5,
        "Q5_1" | "Q5_K_M" => 5.69,
        "Q4_0" | "Q4_K_S" => 4.5,
        "Q4_1" => 5.0,
        "Q4_K_M" => 4.85,
        "Q3_K_S" => 3.5,
        "Q3_K_M" => 3.91,
        "Q3_K_L" => 4.27,
        "Q2_K" | "Q2_K_S" => 2.96,
        _ => return None,
    })
}

impl LlmConfig {
    /// Bytes the weights take, from the parameter count and the quantization (16-bit when unknown).
    pub fn estimated_weight_bytes(&self) -> Option<u64> {
        let params = self.parameter_count?;
        let bits = self
            .quantization
            .as_deref()
            .and_then(bits_per_weight)
            .unwrap_or(16.0);
        Some((params as f64 * bits / 8.0).round() as u64)
    }
}

/// The resolved parameters a text worker starts a request from.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmParams {
    /// Context window in tokens.
    pub context_length: u32,
    /// Temperature; 0 means greedy.
    pub temperature: f64,
    /// Nucleus mass; 1 disables it.
    pub top_p: f64,
    /// Top-k cut; `None` disables it.
    pub top_k: Option<u32>,
    /// Min-p cut; `None` disables it.
    pub min_p: Option<f64>,
    /// Repetition penalty; 1 disables it.
    pub repetition_penalty: f64,
    /// Default number of tokens to generate.
    pub max_new_tokens: u32,
}

/// Context length assumed when the source does not state one: small enough to fit any model.
pub const FALLBACK_CONTEXT_LENGTH: u32 = 2048;

impl ModelConfig for LlmConfig {
    type Params = LlmParams;

    fn model_type(&self) -> ModelType {
        ModelType::Llm
    }

    fn incompatibilities(&self, worker: &WorkerCapabilities) -> Vec<Incompatibility> {
        if let Some(wrong) = wrong_type(ModelType::Llm, worker) {
            return vec![wrong];
        }
        let mut reasons = Vec::new();
        if self.format == WeightFormat::Pickle {
            reasons.push(Incompatibility::Pickle);
        } else if !worker.formats.contains(&self.format) {
            reasons.push(Incompatibility::Format {
                worker: worker.kind,
                format: self.format,
            });
        }
        if worker.formats.contains(&self.format) && !worker.runs_llm(self.format, self.model_family) {
            reasons.push(Incompatibility::Family {
                worker: worker.kind,
                family: self.model_family,
                architecture: self.architecture.clone(),
                format: self.format,
            });
        }
        if self.parameter_count == Some(0) {
            reasons.push(Incompatibility::NoWeights { worker: worker.kind });
        }
        if let Some(q) = &self.quantization
            && !worker.supports_quantization(q)
        {
            reasons.push(Incompatibility::Quantization {
                worker: worker.kind,
                quantization: q.clone(),
            });
        }
        reasons
    }

    fn inference_params(&self) -> LlmParams {
        let s = &self.sampling;
        let greedy = s.do_sample == Some(false);
        LlmParams {
            context_length: self.context_length.unwrap_or(FALLBACK_CONTEXT_LENGTH),
            temperature: if greedy { 0.0 } else { s.temperature.unwrap_or(1.0) },
            top_p: s.top_p.unwrap_or(1.0),
            top_k: s.top_k.filter(|k| *k > 0),
            min_p: s.min_p.filter(|p| *p > 0.0),
            repetition_penalty: s.repetition_penalty.unwrap_or(1.0),
            max_new_tokens: s.max_new_tokens.unwrap_or(512),
        }
    }

    /// Weights as stored, plus an f16 KV cache for up to 8192 tokens when the shape is known (a tenth of
    /// the weights otherwise), plus 256 MiB of activations and runtime.
    fn memory_estimate(&self, weight_bytes: u64) -> u64 {
        const RUNTIME: u64 = 256 << 20;
        let ctx = u64::from(self.context_length.unwrap_or(FALLBACK_CONTEXT_LENGTH).min(8192));
        let kv = match (self.num_layers, self.hidden_size, self.num_attention_heads) {
            (Some(layers), Some(hidden), Some(heads)) if heads > 0 => {
                let head_dim = u64::from(hidden / heads);
                let kv_heads = u64::from(self.num_kv_heads.unwrap_or(heads));
                2 * u64::from(layers) * kv_heads * head_dim * ctx * 2
            }
            _ => weight_bytes / 10,
        };
        weight_bytes + kv + RUNTIME
    }
}
