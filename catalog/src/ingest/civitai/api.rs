//! The shapes of CivitAI's answers, as far as the catalog reads them.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::ingest::IngestError;

/// A model with its versions (`/api/v1/models/{id}`, and each item of a models list).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Model {
    /// The model id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// `Checkpoint`, `LORA`, `TextualInversion`...
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Not safe for work.
    #[serde(default)]
    pub nsfw: bool,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The creator.
    #[serde(default)]
    pub creator: Option<Creator>,
    /// Download and like counts.
    #[serde(default)]
    pub stats: Option<Stats>,
    /// Versions, newest first.
    #[serde(default)]
    pub model_versions: Vec<Version>,
}

/// Who published a model.
#[derive(Debug, Clone, Deserialize)]
pub struct Creator {
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
}

/// Counters.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Downloads.
    #[serde(default)]
    pub download_count: Option<u64>,
    /// Thumbs up.
    #[serde(default)]
    pub thumbs_up_count: Option<u64>,
}

/// The model summary inside a version response.
#[derive(Debug, Clone, Deserialize)]
pub struct VersionModel {
    /// Display name.
    pub name: String,
    /// Model type.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Not safe for work.
    #[serde(default)]
    pub nsfw: bool,
}

/// One version of a model.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    /// The version id.
    pub id: u64,
    /// The model id (present in version responses).
    #[serde(default)]
    pub model_id: Option<u64>,
    /// Version name.
    #[serde(default)]
    pub name: Option<String>,
    /// Base model as CivitAI names it.
    #[serde(default)]
    pub base_model: Option<String>,
    /// Trigger words.
    #[serde(default)]
    pub trained_words: Vec<String>,
    /// Files.
    #[serde(default)]
    pub files: Vec<File>,
    /// Example images.
    #[serde(default)]
    pub images: Vec<Image>,
    /// The model, in version responses.
    #[serde(default)]
    pub model: Option<VersionModel>,
    /// The creator, in version responses.
    #[serde(default)]
    pub creator: Option<Creator>,
    /// Counters.
    #[serde(default)]
    pub stats: Option<Stats>,
}

/// One file of a version.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct File {
    /// File name.
    pub name: String,
    /// Size in KiB.
    #[serde(default, rename = "sizeKB")]
    pub size_kb: Option<f64>,
    /// `Model`, `Pruned Model`, `VAE`, `Config`...
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Format details.
    #[serde(default)]
    pub metadata: Option<FileMetadata>,
    /// Hashes by algorithm (`SHA256`, upper-case hex).
    #[serde(default)]
    pub hashes: BTreeMap<String, String>,
    /// Where to download it.
    #[serde(default)]
    pub download_url: Option<String>,
    /// The file CivitAI offers first.
    #[serde(default)]
    pub primary: Option<bool>,
}

/// Format details of a file.
#[derive(Debug, Clone, Deserialize)]
pub struct FileMetadata {
    /// `SafeTensor`, `PickleTensor`, `GGUF`, `Other`.
    #[serde(default)]
    pub format: Option<String>,
    /// `pruned` or `full`.
    #[serde(default)]
    pub size: Option<String>,
}

/// An example image and how it was made.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// Image URL.
    #[serde(default)]
    pub url: Option<String>,
    /// 1 = PG, 2 = PG-13, 4 = R, 8 = X, 16 = XXX.
    #[serde(default)]
    pub nsfw_level: Option<u64>,
    /// Width.
    #[serde(default)]
    pub width: Option<u32>,
    /// Height.
    #[serde(default)]
    pub height: Option<u32>,
    /// Generation parameters.
    #[serde(default)]
    pub meta: Option<Value>,
}

/// Parses a model response.
pub fn parse_model(bytes: &[u8]) -> Result<Model, IngestError> {
    serde_json::from_slice(bytes).map_err(|e| IngestError::json("CivitAI model", e))
}

/// Parses a model-version response (also the by-hash response).
pub fn parse_version(bytes: &[u8]) -> Result<Version, IngestError> {
    serde_json::from_slice(bytes).map_err(|e| IngestError::json("CivitAI model version", e))
}
