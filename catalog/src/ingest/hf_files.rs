//! The config files of a HuggingFace-style model folder (`config.json`, `tokenizer_config.json`,
//! `generation_config.json`, `chat_template.jinja`, diffusers' `model_index.json`) read into typed configs.
//!
//! Both the Hub source and local folders have these files; this room reads them, whoever fetched them.

use std::collections::BTreeMap;

use artifacts_contract::{
    Distillation, ImageBase, ImageConfig, ImageVariant, LlmConfig, ModelFamily, PredictionType, WeightFormat,
};
use serde_json::Value;

use super::IngestError;

/// Files fetched or read beside the weights, by path relative to the model folder.
pub type FetchedFiles = BTreeMap<String, Vec<u8>>;

/// The small files worth reading for metadata, when a repo or folder has them.
pub const METADATA_FILES: &[&str] = &[
    "config.json",
    "tokenizer_config.json",
    "generation_config.json",
    "chat_template.jinja",
    "model_index.json",
    "unet/config.json",
    "transformer/config.json",
    "scheduler/scheduler_config.json",
];

/// Parses one fetched JSON file, naming it in the error.
pub fn json_file(files: &FetchedFiles, name: &str) -> Result<Option<Value>, IngestError> {
    files
        .get(name)
        .map(|bytes| serde_json::from_slice(bytes).map_err(|e| IngestError::json(name, e)))
        .transpose()
}

fn u32_at(v: &Value, key: &str) -> Option<u32> {
    v.get(key)?.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// A token as tokenizer configs write it: a string, or an added-token object with `content`.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// Token ids as configs write them: one number or a list.
fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .into_iter()
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect(),
        _ => Vec::new(),
    }
}

/// The LLM config a `config.json` describes (architecture, family, sizes).
pub fn llm_config_from_config_json(cfg: &Value, format: WeightFormat) -> LlmConfig {
    // Multimodal wrappers (Gemma 3, Llava) keep the language model's sizes in `text_config`.
    let text = cfg.get("text_config").unwrap_or(cfg);
    let architecture = cfg
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Value::as_str)
        .map(str::to_string);
    let model_type = cfg.get("model_type").and_then(Value::as_str);
    let mut family = architecture
        .as_deref()
        .map(ModelFamily::from_architecture)
        .unwrap_or(ModelFamily::Other);
    if family == ModelFamily::Other
        && let Some(mt) = model_type
    {
        family = ModelFamily::from_architecture(mt);
    }
    let mut c = LlmConfig::new(family, format);
    if let Some(name) = architecture.or(model_type.map(str::to_string)) {
        c.architecture = name;
    }
    c.context_length = u32_at(text, "max_position_embeddings").or_else(|| u32_at(text, "n_positions"));
    c.num_layers = u32_at(text, "num_hidden_layers");
    c.hidden_size = u32_at(text, "hidden_size");
    c.num_attention_heads = u32_at(text, "num_attention_heads");
    c.num_kv_heads = u32_at(text, "num_key_value_heads");
    c.vocab_size = u32_at(text, "vocab_size");
    c.tokenizer.bos_id = u32_at(cfg, "bos_token_id");
    c.tokenizer.eos_ids = token_ids(cfg.get("eos_token_id"));
    if format == WeightFormat::Safetensors {
        c.quantization = cfg.get("torch_dtype").and_then(Value::as_str).map(dtype_name);
    }
    c
}

/// `bfloat16` -> `BF16`, as the contract's quantization names go.
fn dtype_name(torch: &str) -> String {
    match torch {
        "bfloat16" => "BF16".into(),
        "float16" => "F16".into(),
        "float32" => "F32".into(),
        other => other.to_ascii_uppercase(),
    }
}

/// Fills tokens, chat template and sampling defaults from the tokenizer and generation configs and a
/// `chat_template.jinja`, the newer home of the template.
pub fn apply_tokenizer_files(c: &mut LlmConfig, files: &FetchedFiles) -> Result<(), IngestError> {
    if let Some(tc) = json_file(files, "tokenizer_config.json")? {
        let t = &mut c.tokenizer;
        t.bos = token_text(tc.get("bos_token")).or(t.bos.take());
        if let Some(eos) = token_text(tc.get("eos_token")) {
            t.eos = vec![eos];
        }
        t.pad = token_text(tc.get("pad_token")).or(t.pad.take());
        t.unk = token_text(tc.get("unk_token")).or(t.unk.take());
        if let Some(b) = tc.get("add_bos_token").and_then(Value::as_bool) {
            t.add_bos_token = Some(b);
        }
        t.chat_template = match tc.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: the one named `default`, else the first.
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .or(list.first())
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => t.chat_template.take(),
        };
    }
    if let Some(bytes) = files.get("chat_template.jinja") {
        let text = String::from_utf8(bytes.clone()).map_err(|_| IngestError::Json {
            what: "chat_template.jinja".into(),
            message: "it is not UTF-8 text".into(),
        })?;
        c.tokenizer.chat_template = Some(text);
    }
    if let Some(g) = json_file(files, "generation_config.json")? {
        let ids = token_ids(g.get("eos_token_id"));
        if !ids.is_empty() {
            c.tokenizer.eos_ids = ids;
        }
        if let Some(b) = u32_at(&g, "bos_token_id") {
            c.tokenizer.bos_id = Some(b);
        }
        let s = &mut c.sampling;
        s.do_sample = g.get("do_sample").and_then(Value::as_bool);
        s.temperature = g.get("temperature").and_then(Value::as_f64);
        s.top_p = g.get("top_p").and_then(Value::as_f64);
        s.top_k = u32_at(&g, "top_k");
        s.min_p = g.get("min_p").and_then(Value::as_f64);
        s.repetition_penalty = g.get("repetition_penalty").and_then(Value::as_f64);
        s.max_new_tokens = u32_at(&g, "max_new_tokens");
    }
    Ok(())
}

/// The LLM config of a folder or repo from its config files alone.
pub fn llm_config_from_files(files: &FetchedFiles, format: WeightFormat) -> Result<LlmConfig, IngestError> {
    let mut c = match json_file(files, "config.json")? {
        Some(cfg) => llm_config_from_config_json(&cfg, format),
        None => LlmConfig::new(ModelFamily::Other, format),
    };
    apply_tokenizer_files(&mut c, files)?;
    Ok(c)
}

/// Normalizes a base-model repo name (`stabilityai/stable-diffusion-xl-base-1.0`) to a base.
pub fn base_from_repo_name(name: &str) -> ImageBase {
    let n = name.to_ascii_lowercase();
    if n.contains("flux") {
        ImageBase::Flux
    } else if n.contains("stable-diffusion-3") || n.contains("sd3") {
        ImageBase::Sd3
    } else if n.contains("xl") {
        ImageBase::Sdxl
    } else if n.contains("stable-diffusion-2") || n.contains("sd2") {
        ImageBase::Sd2
    } else if n.contains("v1-")
        || n.contains("stable-diffusion-v1")
        || n.contains("sd15")
        || n.contains("sd1")
    {
        ImageBase::Sd1
    } else {
        ImageBase::from_source_name(name)
    }
}

/// The base of a pipeline folder without a `model_index.json`, from its denoiser's config alone: a
/// transformer is Flux's, SDXL's UNet conditions on size and crop ids (`text_time`), and the text
/// encoder's width tells SD 2.x (1024) from 1.x (any other, tiny test pipelines included).
fn base_from_components(
    unet: Option<&Value>,
    transformer: Option<&Value>,
    cross: Option<u64>,
) -> Option<ImageBase> {
    if transformer
        .is_some_and(|t| t.get("guidance_embeds").is_some() || t.get("joint_attention_dim").is_some())
    {
        return Some(ImageBase::Flux);
    }
    let unet = unet?;
    Some(
        if unet.get("addition_embed_type").and_then(Value::as_str) == Some("text_time") {
            ImageBase::Sdxl
        } else if cross == Some(1024) {
            ImageBase::Sd2
        } else {
            ImageBase::Sd1
        },
    )
}

/// The image config of a diffusers pipeline from `model_index.json` and, when present, the UNet's or
/// transformer's config (cross-attention width, input channels, guidance embedding).
pub fn image_config_from_diffusers(
    files: &FetchedFiles,
    repo_name: &str,
) -> Result<ImageConfig, IngestError> {
    let index = json_file(files, "model_index.json")?.unwrap_or(Value::Null);
    let class = index.get("_class_name").and_then(Value::as_str).unwrap_or("");
    let unet = json_file(files, "unet/config.json")?;
    let transformer = json_file(files, "transformer/config.json")?;
    let cross = unet
        .as_ref()
        .and_then(|u| u.get("cross_attention_dim"))
        .and_then(Value::as_u64);
    let base = if class.contains("Flux") {
        ImageBase::Flux
    } else if class.contains("StableDiffusion3") {
        ImageBase::Sd3
    } else if class.contains("XL") || matches!(cross, Some(2048 | 1280)) {
        ImageBase::Sdxl
    } else if class.contains("StableDiffusion") {
        if cross == Some(1024) {
            ImageBase::Sd2
        } else {
            ImageBase::Sd1
        }
    } else if let Some(base) = base_from_components(unet.as_ref(), transformer.as_ref(), cross) {
        base
    } else {
        base_from_repo_name(repo_name)
    };
    let mut c = ImageConfig::new(base);
    c.base_model = Some(class.to_string()).filter(|s| !s.is_empty());
    let in_channels = unet
        .as_ref()
        .and_then(|u| u.get("in_channels"))
        .and_then(Value::as_u64);
    c.variant = if class.contains("Inpaint") || in_channels == Some(9) {
        ImageVariant::Inpaint
    } else if cross == Some(1280)
        || (class.contains("Img2Img") && repo_name.to_lowercase().contains("refiner"))
    {
        ImageVariant::Refiner
    } else {
        ImageVariant::Normal
    };
    if base == ImageBase::Flux {
        let guidance = transformer
            .as_ref()
            .and_then(|t| t.get("guidance_embeds"))
            .and_then(Value::as_bool);
        let schnell =
            guidance == Some(false) || (guidance.is_none() && repo_name.to_lowercase().contains("schnell"));
        c.distillation = schnell.then_some(Distillation::Schnell);
    } else {
        c.distillation = Distillation::from_source_name(repo_name);
    }
    if let Some(sched) = json_file(files, "scheduler/scheduler_config.json")?
        && sched.get("prediction_type").and_then(Value::as_str) == Some("v_prediction")
    {
        c.prediction_type = Some(PredictionType::VPrediction);
    }
    Ok(c)
}
