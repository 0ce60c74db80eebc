//! `ModelEntry`: what the catalog stores about one model, and what every other part reads.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{LlmConfig, ModelType, TypedConfig};
use crate::id::CatalogId;

/// Where an entry's metadata and files came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "lowercase")]
pub enum ModelSource {
    /// The HuggingFace Hub.
    HuggingFace,
    /// CivitAI.
    CivitAi,
    /// A file or folder already on disk.
    Local,
}

/// What a file is for, so workers find the weights and the tokenizer without guessing from names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "snake_case")]
pub enum FileRole {
    /// Model weights (safetensors, GGUF, or pickle files the catalog refused to load).
    Weights,
    /// `tokenizer.json`, `tokenizer.model`, vocab files.
    Tokenizer,
    /// `config.json`, `generation_config.json`, `model_index.json`, scheduler configs.
    Config,
    /// A chat template kept in its own file (`chat_template.jinja`).
    ChatTemplate,
    /// A VAE shipped beside the main weights.
    Vae,
    /// Anything else that belongs to the model (README, license).
    #[serde(other)]
    Other,
}

/// One file of an entry, relative to the entry's folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "camelCase")]
pub struct ModelFile {
    /// Path relative to the entry's folder, with `/` separators; never absolute, never `..`.
    pub path: String,
    /// Size in bytes, when the source says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub size: Option<u64>,
    /// Lower-case hex SHA-256 that the source publishes, used to verify downloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub sha256: Option<String>,
    /// What the file is for.
    pub role: FileRole,
    /// Where to fetch it from when that is not derivable from the id (CivitAI download URLs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub url: Option<String>,
}

impl ModelFile {
    /// True for serialized-Python-object formats that can run code when loaded.
    pub fn is_pickle(&self) -> bool {
        crate::weights::is_pickle_name(&self.path)
    }
}

/// Where an entry's files stand on this machine; only `Available` may be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(tag = "state", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum ArtifactStatus {
    /// Metadata only; `catalog pull` fetches the files.
    NotDownloaded,
    /// A download is in progress or was interrupted; partial files are kept for resuming.
    Downloading {
        /// Bytes on disk so far, over all files.
        downloaded_bytes: u64,
        /// Bytes expected in all, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", tsify(optional))]
        total_bytes: Option<u64>,
    },
    /// Every file is complete and verified.
    Available,
    /// The last download or verification failed; the message says why.
    Failed {
        /// One sentence naming the problem.
        error: String,
    },
}

impl ArtifactStatus {
    /// True only when the files can be loaded.
    pub fn is_available(&self) -> bool {
        matches!(self, ArtifactStatus::Available)
    }
}

/// One model in the catalog: identity, storage and the typed, type-specific config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "camelCase")]
pub struct ModelEntry {
    /// The catalog id, e.g. `hf:Qwen/Qwen2.5-0.5B-Instruct:Q4_K_M`.
    #[cfg_attr(
        feature = "ts",
        tsify(type = "`hf:${string}` | `civitai:${string}` | `file:${string}`")
    )]
    pub id: CatalogId,
    /// Human-readable name.
    pub name: String,
    /// Publisher (HF org, CivitAI creator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub author: Option<String>,
    /// Where it came from.
    pub source: ModelSource,
    /// A page for people to read about the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub source_url: Option<String>,
    /// The exact revision the metadata describes (HF commit sha, CivitAI version id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub revision: Option<String>,
    /// Folder (or file, for `file:` ids) holding the files on this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub path: Option<String>,
    /// Total size of `files` in bytes (0 when unknown).
    #[serde(default)]
    pub size: u64,
    /// The files that make up the model.
    #[serde(default)]
    pub files: Vec<ModelFile>,
    /// Download state.
    pub status: ArtifactStatus,
    /// When the entry was first stored.
    #[cfg_attr(feature = "ts", tsify(type = "string"))]
    pub added_at: DateTime<Utc>,
    /// When the entry last changed.
    #[cfg_attr(feature = "ts", tsify(type = "string"))]
    pub updated_at: DateTime<Utc>,
    /// `modelType` and its matching `config`, which cannot disagree.
    // The override makes tsify emit `type ModelEntry = {..} & TypedConfig`: an interface cannot extend a union.
    #[serde(flatten)]
    #[cfg_attr(feature = "ts", tsify(type = "TypedConfig"))]
    pub config: TypedConfig,
}

impl ModelEntry {
    /// The model type, read from the config so it cannot disagree with it.
    pub fn model_type(&self) -> ModelType {
        self.config.model_type()
    }

    /// Sum of the sizes of the weight files (what loading reads), falling back to `size`, then to what
    /// the config implies (parameters times bytes per weight), so estimates work before sizes are known.
    pub fn weight_bytes(&self) -> u64 {
        let weights: u64 = self
            .files
            .iter()
            .filter(|f| f.role == FileRole::Weights)
            .filter_map(|f| f.size)
            .sum();
        if weights > 0 {
            weights
        } else if self.size > 0 {
            self.size
        } else {
            self.config
                .as_llm()
                .and_then(LlmConfig::estimated_weight_bytes)
                .unwrap_or(0)
        }
    }

    /// The files in a pickle format, whatever their role (a `vae/*.bin` too), which no worker loads.
    pub fn pickle_files(&self) -> impl Iterator<Item = &ModelFile> {
        self.files.iter().filter(|f| f.is_pickle())
    }
}
