//! Entries for unit tests, built from the contract's constructors.

use artifacts_contract::{
    ArtifactStatus, FileRole, ImageConfig, LlmConfig, ModelEntry, ModelFamily, ModelFile, ModelSource,
    TypedConfig, WeightFormat,
};
use chrono::{DateTime, Utc};

pub(crate) fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("valid timestamp")
}

/// A not-downloaded llama GGUF entry with one weight file `model.gguf`.
pub(crate) fn llm_entry(id: &str) -> ModelEntry {
    let mut c = LlmConfig::new(ModelFamily::Llama, WeightFormat::Gguf);
    c.quantization = Some("Q4_K_M".into());
    c.tags = vec!["chat".into()];
    ModelEntry {
        id: id.parse().expect("valid id"),
        name: id.rsplit('/').next().unwrap_or(id).to_string(),
        author: Some("someone".into()),
        source: ModelSource::HuggingFace,
        source_url: None,
        revision: None,
        path: None,
        size: 4,
        files: vec![ModelFile {
            path: "model.gguf".into(),
            size: Some(4),
            sha256: None,
            role: FileRole::Weights,
            url: None,
        }],
        status: ArtifactStatus::NotDownloaded,
        added_at: at(1_700_000_000),
        updated_at: at(1_700_000_000),
        config: TypedConfig::Llm(c),
    }
}

/// An SDXL checkpoint entry.
pub(crate) fn image_entry(id: &str) -> ModelEntry {
    let mut e = llm_entry(id);
    e.source = ModelSource::CivitAi;
    e.config = TypedConfig::Image(ImageConfig::from_base_model("Pony"));
    e
}
