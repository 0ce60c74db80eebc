//! The shape of the Hub's model-info answer, as far as the catalog reads it.

use serde::Deserialize;
use serde_json::Value;

use crate::ingest::{IngestError, NameKind, check_name};

/// One file of a repository as model info lists it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Sibling {
    /// Path in the repo.
    pub rfilename: String,
    /// Size in bytes (with `?blobs=true`).
    #[serde(default)]
    pub size: Option<u64>,
    /// LFS pointer data: the SHA-256 of the content (with `?blobs=true`).
    #[serde(default)]
    pub lfs: Option<Lfs>,
}

/// LFS details of a sibling.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Lfs {
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// Size in bytes.
    #[serde(default)]
    pub size: Option<u64>,
}

/// The fields of the Hub's model info the catalog reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelInfo {
    /// `org/name`.
    pub id: String,
    /// The publisher.
    #[serde(default)]
    pub author: Option<String>,
    /// The commit the info describes.
    #[serde(default)]
    pub sha: Option<String>,
    /// `false`, `"auto"` or `"manual"`.
    #[serde(default)]
    pub gated: Value,
    /// The task (`text-generation`, `text-to-image`).
    #[serde(default)]
    pub pipeline_tag: Option<String>,
    /// `transformers`, `diffusers`, `gguf`...
    #[serde(default)]
    pub library_name: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Download count.
    #[serde(default)]
    pub downloads: Option<u64>,
    /// Like count.
    #[serde(default)]
    pub likes: Option<u64>,
    /// The files.
    #[serde(default)]
    pub siblings: Vec<Sibling>,
    /// The model card's front matter.
    #[serde(default, rename = "cardData")]
    pub card_data: Option<Value>,
    /// A digest of `config.json` and the tokenizer config.
    #[serde(default)]
    pub config: Option<Value>,
    /// Parameter counts by dtype.
    #[serde(default)]
    pub safetensors: Option<Value>,
    /// The Hub's digest of a GGUF repo's header.
    #[serde(default)]
    pub gguf: Option<Value>,
}

/// Parses a model-info response.
/// The commit sha is checked here, once, because it names a folder (`snapshots/SHA`) and a URL segment.
pub fn parse_model_info(bytes: &[u8]) -> Result<ModelInfo, IngestError> {
    let info: ModelInfo =
        serde_json::from_slice(bytes).map_err(|e| IngestError::json("HuggingFace model info", e))?;
    if let Some(sha) = &info.sha {
        check_name(NameKind::CommitSha, sha)?;
    }
    Ok(info)
}
