//! The HuggingFace Hub: model info (`/api/models/{id}[/revision/{rev}]`), search results, which files to
//! fetch for metadata, which GGUF file a quantization names, and the entry all of that describes.
//!
//! Sans-IO: [`plan_fetch`] says what to fetch, the caller fetches it (natively or with the browser's
//! fetch), and [`build_entry`] turns the answers into a [`ModelEntry`].

use artifacts_contract::{
    AudioConfig, CatalogId, CheckpointType, FileRole, Gated, ImageConfig, LlmConfig, ModelEntry, ModelFamily,
    ModelFile, ModelSource, Selector, TypedConfig, VideoConfig, WeightFormat,
};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::gguf::GgufHeader;
use super::hf_files::{self, FetchedFiles};
use super::repo_files::{diffusers_files, gguf_parts, is_gguf_choice, llm_files, model_file, select_gguf};
use super::{IngestError, NameKind, check_name, is_pickle_name, is_weight_name, role_of};

pub use super::repo_files::quant_of_file_name;

mod info;
pub use info::{Lfs, ModelInfo, Sibling, parse_model_info};

/// The public Hub, where model pages live.
pub const PUBLIC_ENDPOINT: &str = "https://huggingface.co";

/// What a repository is, which decides the entry's type and files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoKind {
    /// A text model in one GGUF file.
    Gguf(String),
    /// A text model in safetensors (or pickle) files.
    Llm,
    /// A diffusers pipeline or image add-on.
    Image,
    /// Speech and audio.
    Audio,
    /// Video generation.
    Video,
}

/// What to fetch before building the entry: small metadata files, and the GGUF file whose header to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPlan {
    /// The kind of repository.
    pub kind: RepoKind,
    /// Small files to fetch whole (`config.json`...), present in the repo.
    pub metadata_files: Vec<String>,
    /// The GGUF file whose header to read with Range requests.
    pub gguf_file: Option<String>,
}

fn selector_of(id: &CatalogId) -> Option<Selector<'_>> {
    id.selector()
}

fn repo_of(id: &CatalogId) -> Result<&str, IngestError> {
    match id {
        CatalogId::HuggingFace { repo, .. } => Ok(repo),
        other => Err(IngestError::WrongScheme {
            id: other.to_string(),
            expected: "hf:",
        }),
    }
}

/// Decides what the repository is and what to fetch to describe it.
pub fn plan_fetch(id: &CatalogId, info: &ModelInfo) -> Result<FetchPlan, IngestError> {
    let repo = repo_of(id)?;
    let names: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let kind = repo_kind(repo, info, selector_of(id))?;
    let metadata_files = hf_files::METADATA_FILES
        .iter()
        .filter(|f| names.contains(f))
        .map(|f| f.to_string())
        .collect();
    let gguf_file = match &kind {
        RepoKind::Gguf(f) => Some(f.clone()),
        _ => None,
    };
    Ok(FetchPlan {
        kind,
        metadata_files,
        gguf_file,
    })
}

fn repo_kind(repo: &str, info: &ModelInfo, selector: Option<Selector<'_>>) -> Result<RepoKind, IngestError> {
    let names: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let ggufs: Vec<&str> = names.iter().copied().filter(|n| is_gguf_choice(n)).collect();
    match selector {
        Some(Selector::Quant(q)) => return select_gguf(repo, &ggufs, Some(q)).map(RepoKind::Gguf),
        Some(Selector::File(f)) if f.to_lowercase().ends_with(".gguf") => {
            return select_gguf(repo, &ggufs, Some(f)).map(RepoKind::Gguf);
        }
        Some(Selector::File(f)) if !names.contains(&f) => {
            return Err(IngestError::NoMatch {
                repo: repo.into(),
                wanted: f.into(),
                choices: names
                    .iter()
                    .filter(|n| is_weight_name(n))
                    .map(|n| n.to_string())
                    .collect(),
            });
        }
        _ => {}
    }
    let task = info.pipeline_tag.as_deref().unwrap_or("");
    if matches!(
        task,
        "automatic-speech-recognition"
            | "text-to-speech"
            | "text-to-audio"
            | "audio-to-audio"
            | "audio-classification"
    ) {
        return Ok(RepoKind::Audio);
    }
    if matches!(task, "text-to-video" | "image-to-video") {
        return Ok(RepoKind::Video);
    }
    if names.contains(&"model_index.json")
        || info.library_name.as_deref() == Some("diffusers")
        || matches!(task, "text-to-image" | "image-to-image")
    {
        return Ok(RepoKind::Image);
    }
    let has_safetensors = names
        .iter()
        .any(|n| !n.contains('/') && n.ends_with(".safetensors"));
    if !has_safetensors && !ggufs.is_empty() {
        return select_gguf(repo, &ggufs, None).map(RepoKind::Gguf);
    }
    Ok(RepoKind::Llm)
}

fn card_str(info: &ModelInfo, key: &str) -> Option<String> {
    match info.card_data.as_ref()?.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items.first()?.as_str().map(str::to_string),
        _ => None,
    }
}

fn card_list(info: &ModelInfo, key: &str) -> Vec<String> {
    match info.card_data.as_ref().and_then(|c| c.get(key)) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn license(info: &ModelInfo) -> Option<String> {
    card_str(info, "license").or_else(|| {
        info.tags
            .iter()
            .find_map(|t| t.strip_prefix("license:").map(str::to_string))
    })
}

fn gated(info: &ModelInfo) -> Gated {
    match info.gated.as_str() {
        Some("manual") => Gated::Manual,
        Some(_) => Gated::Auto,
        None if info.gated.as_bool() == Some(true) => Gated::Auto,
        None => Gated::Open,
    }
}

/// The LLM config the model info alone gives (its digests of config.json, safetensors and GGUF).
fn llm_from_info(info: &ModelInfo, format: WeightFormat) -> LlmConfig {
    let mut c = match &info.config {
        Some(cfg) => hf_files::llm_config_from_config_json(cfg, format),
        None => LlmConfig::new(ModelFamily::Other, format),
    };
    if let Some(tc) = info.config.as_ref().and_then(|c| c.get("tokenizer_config")) {
        let text = |k: &str| match tc.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).map(str::to_string),
            _ => None,
        };
        c.tokenizer.bos = text("bos_token");
        c.tokenizer.eos = text("eos_token").into_iter().collect();
        c.tokenizer.pad = text("pad_token");
        c.tokenizer.unk = text("unk_token");
        c.tokenizer.chat_template = text("chat_template");
    }
    if let Some(st) = &info.safetensors {
        c.parameter_count = st.get("total").and_then(Value::as_u64);
        if format == WeightFormat::Safetensors
            && let Some(Value::Object(params)) = st.get("parameters")
        {
            c.quantization = params
                .iter()
                .max_by_key(|(_, n)| n.as_u64().unwrap_or(0))
                .map(|(dtype, _)| dtype.to_ascii_uppercase());
        }
    }
    if let Some(g) = &info.gguf {
        if let Some(arch) = g.get("architecture").and_then(Value::as_str) {
            c.architecture = arch.into();
            c.model_family = ModelFamily::from_architecture(arch);
        }
        c.context_length = g
            .get("context_length")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .or(c.context_length);
        c.parameter_count = g.get("total").and_then(Value::as_u64).or(c.parameter_count);
        if let Some(t) = g.get("chat_template").and_then(Value::as_str) {
            c.tokenizer.chat_template = Some(t.into());
        }
        if let Some(t) = g.get("bos_token").and_then(Value::as_str) {
            c.tokenizer.bos = Some(t.into());
        }
        if let Some(t) = g.get("eos_token").and_then(Value::as_str) {
            c.tokenizer.eos = vec![t.into()];
        }
    }
    c
}

fn fill_llm_common(c: &mut LlmConfig, info: &ModelInfo) {
    c.license = c.license.take().or_else(|| license(info));
    c.base_model = card_str(info, "base_model").or(c.base_model.take());
    c.languages = card_list(info, "language");
    c.tags = info.tags.clone();
    c.gated = gated(info);
    c.downloads = info.downloads;
    c.likes = info.likes;
}

fn image_from_info(info: &ModelInfo, files: &FetchedFiles) -> Result<ImageConfig, IngestError> {
    let name = info.id.as_str();
    let mut c = if files.contains_key("model_index.json") {
        hf_files::image_config_from_diffusers(files, name)?
    } else {
        // Add-ons (LoRAs, embeddings) name their base model in the card.
        let base_name = card_str(info, "base_model").unwrap_or_else(|| name.to_string());
        let mut c = ImageConfig::new(hf_files::base_from_repo_name(&base_name));
        c.base_model = Some(base_name);
        c
    };
    let tags: Vec<String> = info.tags.iter().map(|t| t.to_ascii_lowercase()).collect();
    let has = |t: &str| tags.iter().any(|x| x == t);
    if !files.contains_key("model_index.json") {
        c.checkpoint_type = if has("lora") {
            CheckpointType::Lora
        } else if has("textual_inversion") {
            CheckpointType::Embedding
        } else if has("controlnet") {
            CheckpointType::Controlnet
        } else {
            c.checkpoint_type
        };
    }
    c.license = license(info);
    c.tags = info.tags.clone();
    c.nsfw = has("not-for-all-audiences");
    c.downloads = info.downloads;
    c.likes = info.likes;
    Ok(c)
}

/// Builds the entry from the model info, the metadata files fetched per [`plan_fetch`], and the GGUF
/// header when the plan named a GGUF file.
pub fn build_entry(
    id: &CatalogId,
    info: &ModelInfo,
    files: &FetchedFiles,
    gguf: Option<&GgufHeader>,
    now: DateTime<Utc>,
) -> Result<ModelEntry, IngestError> {
    let repo = repo_of(id)?;
    let kind = repo_kind(repo, info, selector_of(id))?;
    let only_file = match selector_of(id) {
        Some(Selector::File(f)) => Some(f),
        _ => None,
    };
    let (config, chosen): (TypedConfig, Vec<&Sibling>) = match &kind {
        RepoKind::Gguf(file) => {
            let mut c = match gguf {
                Some(h) => h.llm_config(),
                None => llm_from_info(info, WeightFormat::Gguf),
            };
            if c.tokenizer.chat_template.is_none() {
                let from_files = hf_files::llm_config_from_files(files, WeightFormat::Gguf)?;
                c.tokenizer.chat_template = from_files.tokenizer.chat_template;
            }
            if c.quantization.is_none() {
                c.quantization = quant_of_file_name(file);
            }
            fill_llm_common(&mut c, info);
            let names: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
            let parts = gguf_parts(repo, file, &names)?;
            let chosen = info
                .siblings
                .iter()
                .filter(|s| parts.contains(&s.rfilename.as_str()))
                .collect();
            (TypedConfig::Llm(c), chosen)
        }
        RepoKind::Llm => {
            let chosen = llm_files(&info.siblings, only_file);
            if !chosen.iter().any(|s| role_of(&s.rfilename) == FileRole::Weights) {
                return Err(IngestError::NoWeights(format!("hf:{repo}")));
            }
            let pickle = chosen.iter().any(|s| is_pickle_name(&s.rfilename));
            let format = if pickle {
                WeightFormat::Pickle
            } else {
                WeightFormat::Safetensors
            };
            let mut c = if files.contains_key("config.json") {
                let mut c = hf_files::llm_config_from_files(files, format)?;
                let digest = llm_from_info(info, format);
                c.parameter_count = c.parameter_count.or(digest.parameter_count);
                c.quantization = c.quantization.or(digest.quantization);
                if c.tokenizer.chat_template.is_none() {
                    c.tokenizer.chat_template = digest.tokenizer.chat_template;
                }
                c
            } else {
                let mut c = llm_from_info(info, format);
                hf_files::apply_tokenizer_files(&mut c, files)?;
                c
            };
            fill_llm_common(&mut c, info);
            (TypedConfig::Llm(c), chosen)
        }
        RepoKind::Image => (
            TypedConfig::Image(image_from_info(info, files)?),
            diffusers_files(&info.siblings),
        ),
        RepoKind::Audio => {
            let c = AudioConfig {
                architecture: info
                    .config
                    .as_ref()
                    .and_then(|c| c.get("architectures")?.get(0)?.as_str().map(str::to_string)),
                task: info.pipeline_tag.clone(),
                languages: card_list(info, "language"),
                license: license(info),
                tags: info.tags.clone(),
                ..AudioConfig::default()
            };
            (TypedConfig::Audio(c), llm_files(&info.siblings, only_file))
        }
        RepoKind::Video => {
            let c = VideoConfig {
                base_model: card_str(info, "base_model"),
                license: license(info),
                tags: info.tags.clone(),
                ..VideoConfig::default()
            };
            (TypedConfig::Video(c), diffusers_files(&info.siblings))
        }
    };
    let files = chosen
        .into_iter()
        .map(model_file)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(entry(id.clone(), info, files, config, now))
}

fn entry(
    id: CatalogId,
    info: &ModelInfo,
    files: Vec<ModelFile>,
    config: TypedConfig,
    now: DateTime<Utc>,
) -> ModelEntry {
    let repo = info.id.as_str();
    ModelEntry {
        id,
        name: repo.rsplit('/').next().unwrap_or(repo).to_string(),
        author: info
            .author
            .clone()
            .or_else(|| repo.split_once('/').map(|(org, _)| org.to_string())),
        source: ModelSource::HuggingFace,
        source_url: Some(format!("{PUBLIC_ENDPOINT}/{repo}")),
        revision: info.sha.clone(),
        path: None,
        size: files.iter().filter_map(|f| f.size).sum(),
        files,
        status: artifacts_contract::ArtifactStatus::NotDownloaded,
        added_at: now,
        updated_at: now,
        config,
    }
}

/// An entry from the model info alone, with no file fetched: what a browser shows while browsing.
pub fn entry_from_info(info: &ModelInfo, now: DateTime<Utc>) -> Result<ModelEntry, IngestError> {
    if let Some(sha) = &info.sha {
        check_name(NameKind::CommitSha, sha)?;
    }
    let id: CatalogId = format!("hf:{}", info.id).parse().map_err(|e| IngestError::Json {
        what: "HuggingFace model info".into(),
        message: format!("bad model id: {e}"),
    })?;
    match build_entry(&id, info, &FetchedFiles::new(), None, now) {
        // Search results list no files; describe the repo anyway.
        Err(IngestError::NoWeights(_) | IngestError::AmbiguousGguf { .. }) => {
            let mut c = llm_from_info(
                info,
                if info.gguf.is_some() {
                    WeightFormat::Gguf
                } else {
                    WeightFormat::Other
                },
            );
            fill_llm_common(&mut c, info);
            Ok(entry(id, info, Vec::new(), TypedConfig::Llm(c), now))
        }
        other => other,
    }
}

/// An entry from a model-info JSON document alone.
pub fn entry_from_model_info_json(bytes: &[u8], now: DateTime<Utc>) -> Result<ModelEntry, IngestError> {
    entry_from_info(&parse_model_info(bytes)?, now)
}

/// Entries from a search response (`/api/models?search=...`, an array of model infos).
pub fn parse_search(bytes: &[u8], now: DateTime<Utc>) -> Result<Vec<ModelEntry>, IngestError> {
    let infos: Vec<ModelInfo> =
        serde_json::from_slice(bytes).map_err(|e| IngestError::json("HuggingFace search response", e))?;
    infos.iter().map(|i| entry_from_info(i, now)).collect()
}

/// Percent-encodes one URL path segment (revisions such as `refs/pr/1` hold slashes).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The model-info URL of an id, with file sizes and hashes (`blobs=true`).
pub fn model_info_url(endpoint: &str, repo: &str, revision: Option<&str>) -> String {
    let base = endpoint.trim_end_matches('/');
    match revision {
        Some(rev) => format!(
            "{base}/api/models/{repo}/revision/{}?blobs=true",
            encode_segment(rev)
        ),
        None => format!("{base}/api/models/{repo}?blobs=true"),
    }
}

/// The download URL of one file at a revision.
pub fn file_url(endpoint: &str, repo: &str, revision: &str, path: &str) -> String {
    let path: Vec<String> = path.split('/').map(encode_segment).collect();
    format!(
        "{}/{repo}/resolve/{}/{}",
        endpoint.trim_end_matches('/'),
        encode_segment(revision),
        path.join("/")
    )
}

/// The search URL for a text.
pub fn search_url(endpoint: &str, text: &str, limit: u32) -> String {
    format!(
        "{}/api/models?search={}&limit={limit}&full=true",
        endpoint.trim_end_matches('/'),
        encode_segment(text)
    )
}

#[cfg(test)]
mod tests;
