//! CivitAI: models (`/api/v1/models/{id}`), versions (`/api/v1/model-versions/{id}`, also what the
//! by-hash lookup returns) and model lists (search) read into entries.
//!
//! The base model is normalized by the contract (Pony, Illustrious and NoobAI are SDXL; `Flux.1 *` is
//! Flux); the recommended sampler, steps, CFG and clip skip are the most common values in the version's
//! example images. Pickle files are refused unless the caller allows them.

use std::collections::BTreeMap;

use artifacts_contract::{
    ArtifactStatus, CatalogId, CheckpointType, FileRole, ImageConfig, ModelEntry, ModelFile, ModelSource,
    PreviewImage, TypedConfig, VideoConfig,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::{IngestError, NameKind, check_name};

mod api;
pub use api::{
    Creator, File, FileMetadata, Image, Model, Stats, Version, VersionModel, parse_model, parse_version,
};

/// The public CivitAI site, where model pages live.
pub const PUBLIC_ENDPOINT: &str = "https://civitai.com";

/// At most this many preview images are kept per entry.
const MAX_PREVIEWS: usize = 8;

fn is_pickle(f: &File) -> bool {
    let format = f.metadata.as_ref().and_then(|m| m.format.as_deref());
    format == Some("PickleTensor") || artifacts_contract::weights::is_pickle_name(&f.name)
}

fn is_model_file(f: &File) -> bool {
    f.kind == "Model" || f.kind == "Pruned Model"
}

/// The primary weights: a SafeTensor model file (CivitAI's primary, then a pruned one), then other
/// non-pickle formats, then (only when allowed) a pickle file.
pub fn primary_file(version: &Version, allow_pickle: bool) -> Result<&File, IngestError> {
    let models: Vec<&File> = version.files.iter().filter(|f| is_model_file(f)).collect();
    fn best(files: Vec<&File>) -> Option<&File> {
        files.into_iter().min_by_key(|f| {
            (
                f.primary != Some(true),
                f.metadata.as_ref().and_then(|m| m.size.as_deref()) != Some("pruned"),
            )
        })
    }
    let safetensors: Vec<&File> = models
        .iter()
        .copied()
        .filter(|f| f.metadata.as_ref().and_then(|m| m.format.as_deref()) == Some("SafeTensor"))
        .collect();
    if let Some(f) = best(safetensors) {
        return Ok(f);
    }
    if let Some(f) = best(models.iter().copied().filter(|f| !is_pickle(f)).collect()) {
        return Ok(f);
    }
    match best(models) {
        Some(f) if allow_pickle => Ok(f),
        Some(f) => Err(IngestError::Pickle { file: f.name.clone() }),
        None => Err(IngestError::NoWeights(format!("CivitAI version {}", version.id))),
    }
}

fn model_file(f: &File, role: FileRole) -> Result<ModelFile, IngestError> {
    check_name(NameKind::FileName, &f.name)?;
    Ok(ModelFile {
        path: f.name.clone(),
        size: f.size_kb.map(|kb| (kb * 1024.0).round() as u64),
        sha256: f.hashes.get("SHA256").map(|h| h.to_ascii_lowercase()),
        role,
        url: f.download_url.clone(),
    })
}

fn checkpoint_type(kind: &str) -> CheckpointType {
    match kind {
        "Checkpoint" => CheckpointType::Checkpoint,
        "LORA" | "LoCon" | "DoRA" | "LyCORIS" => CheckpointType::Lora,
        "TextualInversion" => CheckpointType::Embedding,
        "Hypernetwork" => CheckpointType::Hypernetwork,
        "VAE" => CheckpointType::Vae,
        "Controlnet" => CheckpointType::Controlnet,
        _ => CheckpointType::Other,
    }
}

fn is_video_base(base: &str) -> bool {
    let b = base.to_ascii_lowercase();
    b.contains("video") || ["ltxv", "mochi", "svd", "wan "].iter().any(|p| b.starts_with(p))
}

/// The most common value of a key over the images' generation metadata.
fn mode_of<T: Ord + Clone>(
    images: &[&Image],
    keys: &[&str],
    read: impl Fn(&Value) -> Option<T>,
) -> Option<T> {
    let mut counts: BTreeMap<T, usize> = BTreeMap::new();
    for meta in images.iter().filter_map(|i| i.meta.as_ref()) {
        if let Some(v) = keys.iter().find_map(|k| meta.get(*k)).and_then(&read) {
            *counts.entry(v).or_default() += 1;
        }
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(v, _)| v)
}

fn number(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str()?.trim().parse().ok())
}

fn apply_image_recommendations(c: &mut ImageConfig, images: &[&Image]) {
    c.samplers = mode_of(images, &["sampler"], |v| v.as_str().map(str::to_string))
        .into_iter()
        .collect();
    c.steps = mode_of(images, &["steps"], |v| number(v).map(|n| n as u32));
    // f64 is not Ord: count CFG in tenths.
    c.cfg_scale = mode_of(images, &["cfgScale"], |v| {
        number(v).map(|n| (n * 10.0).round() as i64)
    })
    .map(|t| t as f64 / 10.0);
    c.clip_skip = mode_of(images, &["clipSkip", "Clip skip"], |v| {
        number(v).map(|n| n as u32)
    });
}

/// Builds the entry of one version; `model` gives the name, type and counters when the caller has it.
pub fn entry_from_version(
    id: CatalogId,
    version: &Version,
    model: Option<&Model>,
    allow_pickle: bool,
    now: DateTime<Utc>,
) -> Result<ModelEntry, IngestError> {
    let primary = primary_file(version, allow_pickle)?;
    let mut files = vec![model_file(primary, FileRole::Weights)?];
    for vae in version.files.iter().filter(|f| f.kind == "VAE" && !is_pickle(f)) {
        files.push(model_file(vae, FileRole::Vae)?);
    }
    let name = model
        .map(|m| m.name.clone())
        .or_else(|| version.model.as_ref().map(|m| m.name.clone()))
        .unwrap_or_else(|| format!("CivitAI version {}", version.id));
    let kind = model
        .map(|m| m.kind.as_str())
        .or(version.model.as_ref().map(|m| m.kind.as_str()))
        .unwrap_or("");
    let nsfw = model
        .map(|m| m.nsfw)
        .or(version.model.as_ref().map(|m| m.nsfw))
        .unwrap_or(false);
    let stats = model.and_then(|m| m.stats.as_ref()).or(version.stats.as_ref());
    let base_model = version.base_model.clone().unwrap_or_else(|| "Other".into());
    let tags = model.map(|m| m.tags.clone()).unwrap_or_default();
    let config = if is_video_base(&base_model) {
        TypedConfig::Video(VideoConfig {
            base_model: Some(base_model),
            nsfw,
            tags,
            ..VideoConfig::default()
        })
    } else {
        let mut c = ImageConfig::from_base_model(&base_model);
        c.checkpoint_type = checkpoint_type(kind);
        c.trigger_words = version.trained_words.clone();
        c.nsfw = nsfw;
        c.tags = tags;
        c.downloads = stats.and_then(|s| s.download_count);
        c.likes = stats.and_then(|s| s.thumbs_up_count);
        let own: Vec<&Image> = version.images.iter().collect();
        let all: Vec<&Image> = model
            .map(|m| m.model_versions.iter().flat_map(|v| &v.images).collect())
            .unwrap_or_default();
        let with_meta = |imgs: &[&Image]| imgs.iter().any(|i| i.meta.as_ref().is_some_and(Value::is_object));
        apply_image_recommendations(
            &mut c,
            if with_meta(&own) || !with_meta(&all) {
                &own
            } else {
                &all
            },
        );
        c.preview_images = version
            .images
            .iter()
            .filter_map(|i| {
                Some(PreviewImage {
                    url: i.url.clone()?,
                    width: i.width,
                    height: i.height,
                    nsfw: i.nsfw_level.unwrap_or(1) >= 4,
                })
            })
            .take(MAX_PREVIEWS)
            .collect();
        TypedConfig::Image(c)
    };
    let model_id = match &id {
        CatalogId::CivitAi { model, .. } => *model,
        _ => version.model_id.unwrap_or(0),
    };
    Ok(ModelEntry {
        id,
        name,
        author: model
            .and_then(|m| m.creator.as_ref())
            .or(version.creator.as_ref())
            .and_then(|c| c.username.clone()),
        source: ModelSource::CivitAi,
        source_url: Some(format!(
            "{PUBLIC_ENDPOINT}/models/{model_id}?modelVersionId={}",
            version.id
        )),
        revision: Some(version.id.to_string()),
        path: None,
        size: files.iter().filter_map(|f| f.size).sum(),
        files,
        status: ArtifactStatus::NotDownloaded,
        added_at: now,
        updated_at: now,
        config,
    })
}

/// Builds the entry of a model: the version the id names, else the newest.
pub fn entry_from_model(
    id: &CatalogId,
    model: &Model,
    allow_pickle: bool,
    now: DateTime<Utc>,
) -> Result<ModelEntry, IngestError> {
    let wanted = match id {
        CatalogId::CivitAi { version, .. } => *version,
        other => {
            return Err(IngestError::WrongScheme {
                id: other.to_string(),
                expected: "civitai:",
            });
        }
    };
    let version = match wanted {
        Some(v) => model
            .model_versions
            .iter()
            .find(|x| x.id == v)
            .ok_or_else(|| IngestError::NoMatch {
                repo: format!("civitai:{}", model.id),
                wanted: v.to_string(),
                choices: model.model_versions.iter().map(|x| x.id.to_string()).collect(),
            })?,
        None => model
            .model_versions
            .first()
            .ok_or_else(|| IngestError::NoWeights(format!("civitai:{} (it has no versions)", model.id)))?,
    };
    entry_from_version(id.clone(), version, Some(model), allow_pickle, now)
}

/// An entry from a version response alone (model-versions or by-hash), keyed `civitai:MODEL@VERSION`.
pub fn entry_from_version_json(
    bytes: &[u8],
    allow_pickle: bool,
    now: DateTime<Utc>,
) -> Result<ModelEntry, IngestError> {
    let version = parse_version(bytes)?;
    let id = CatalogId::CivitAi {
        model: version.model_id.ok_or_else(|| IngestError::Json {
            what: "CivitAI model version".into(),
            message: "it has no modelId".into(),
        })?,
        version: Some(version.id),
    };
    entry_from_version(id, &version, None, allow_pickle, now)
}

/// An entry from a model response alone, newest version; pickle weights are described, not refused,
/// since nothing is downloaded by browsing.
pub fn entry_from_model_json(bytes: &[u8], now: DateTime<Utc>) -> Result<ModelEntry, IngestError> {
    let model = parse_model(bytes)?;
    entry_from_model(
        &CatalogId::CivitAi {
            model: model.id,
            version: None,
        },
        &model,
        true,
        now,
    )
}

/// Entries from a models-list (search) response; models without usable files are skipped.
pub fn parse_models_list(bytes: &[u8], now: DateTime<Utc>) -> Result<Vec<ModelEntry>, IngestError> {
    #[derive(Deserialize)]
    struct List {
        items: Vec<Model>,
    }
    let list: List =
        serde_json::from_slice(bytes).map_err(|e| IngestError::json("CivitAI models list", e))?;
    Ok(list
        .items
        .iter()
        .filter_map(|m| {
            entry_from_model(
                &CatalogId::CivitAi {
                    model: m.id,
                    version: None,
                },
                m,
                true,
                now,
            )
            .ok()
        })
        .collect())
}

/// The model URL.
pub fn model_url(endpoint: &str, model: u64) -> String {
    format!("{}/api/v1/models/{model}", endpoint.trim_end_matches('/'))
}

/// The model-version URL.
pub fn version_url(endpoint: &str, version: u64) -> String {
    format!(
        "{}/api/v1/model-versions/{version}",
        endpoint.trim_end_matches('/')
    )
}

/// The by-hash lookup URL.
pub fn by_hash_url(endpoint: &str, sha256: &str) -> String {
    format!(
        "{}/api/v1/model-versions/by-hash/{sha256}",
        endpoint.trim_end_matches('/')
    )
}

/// The search URL.
pub fn search_url(endpoint: &str, text: &str, limit: u32) -> String {
    format!(
        "{}/api/v1/models?query={}&limit={limit}",
        endpoint.trim_end_matches('/'),
        super::hf::encode_segment(text)
    )
}

#[cfg(test)]
mod tests;
