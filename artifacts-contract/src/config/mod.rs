//! Type-specific model configs and the trait they share.
//!
//! `TypedConfig` pairs a `modelType` with the config of that type in one serde-tagged enum, so the two
//! cannot disagree in Rust, in JSON (`"modelType": "llm", "config": {..}`) or in TypeScript (a
//! discriminated union).

mod audio;
mod image;
pub mod llm;
mod video;

pub use audio::{AudioConfig, AudioParams};
pub use image::{
    CheckpointType, Distillation, ImageBase, ImageConfig, ImageParams, ImageVariant, PredictionType,
    PreviewImage, Resolution,
};
pub use llm::{Gated, LlmConfig, LlmParams, ModelFamily, SamplingDefaults, TokenizerInfo, WeightFormat};
pub use video::{VideoConfig, VideoParams};

use serde::{Deserialize, Serialize};

use crate::compat::{Incompatibility, WorkerCapabilities};

/// The broad kind of a model, used for filtering and for routing to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    /// Text generation.
    Llm,
    /// Image generation.
    Image,
    /// Speech and audio.
    Audio,
    /// Video generation.
    Video,
}

impl ModelType {
    /// Every type, for listings and command-line choices.
    pub const ALL: [ModelType; 4] = [
        ModelType::Llm,
        ModelType::Image,
        ModelType::Audio,
        ModelType::Video,
    ];

    /// The JSON name (`llm`, `image`...).
    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::Llm => "llm",
            ModelType::Image => "image",
            ModelType::Audio => "audio",
            ModelType::Video => "video",
        }
    }
}

impl std::str::FromStr for ModelType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ModelType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown model type {s:?}: expected llm, image, audio or video"))
    }
}

impl std::fmt::Display for ModelType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What every type-specific config can answer, so workers and the catalog treat them alike.
pub trait ModelConfig {
    /// The inference parameters a worker of this type starts from (defaults filled in).
    type Params;

    /// The model type this config describes.
    fn model_type(&self) -> ModelType;

    /// Every reason the described worker cannot run this model; empty means it can.
    fn incompatibilities(&self, worker: &WorkerCapabilities) -> Vec<Incompatibility>;

    /// The parameters a worker needs, with the source's recommendations or sensible defaults.
    fn inference_params(&self) -> Self::Params;

    /// Bytes of memory needed to load the model and run one request, given the weights' size on disk.
    fn memory_estimate(&self, weight_bytes: u64) -> u64;
}

/// A model type together with its config: the one place the two are paired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(tag = "modelType", content = "config", rename_all = "lowercase")]
// Entries are nearly all Llm or Image, which are both large: boxing would only add an indirection.
#[allow(clippy::large_enum_variant)]
pub enum TypedConfig {
    /// A text-generation model.
    Llm(LlmConfig),
    /// An image-generation model.
    Image(ImageConfig),
    /// An audio model.
    Audio(AudioConfig),
    /// A video model.
    Video(VideoConfig),
}

impl TypedConfig {
    /// The model type of the contained config.
    pub fn model_type(&self) -> ModelType {
        match self {
            TypedConfig::Llm(c) => c.model_type(),
            TypedConfig::Image(c) => c.model_type(),
            TypedConfig::Audio(c) => c.model_type(),
            TypedConfig::Video(c) => c.model_type(),
        }
    }

    /// See [`ModelConfig::incompatibilities`].
    pub fn incompatibilities(&self, worker: &WorkerCapabilities) -> Vec<Incompatibility> {
        match self {
            TypedConfig::Llm(c) => c.incompatibilities(worker),
            TypedConfig::Image(c) => c.incompatibilities(worker),
            TypedConfig::Audio(c) => c.incompatibilities(worker),
            TypedConfig::Video(c) => c.incompatibilities(worker),
        }
    }

    /// See [`ModelConfig::memory_estimate`].
    pub fn memory_estimate(&self, weight_bytes: u64) -> u64 {
        match self {
            TypedConfig::Llm(c) => c.memory_estimate(weight_bytes),
            TypedConfig::Image(c) => c.memory_estimate(weight_bytes),
            TypedConfig::Audio(c) => c.memory_estimate(weight_bytes),
            TypedConfig::Video(c) => c.memory_estimate(weight_bytes),
        }
    }

    /// The LLM config, when this is one.
    pub fn as_llm(&self) -> Option<&LlmConfig> {
        match self {
            TypedConfig::Llm(c) => Some(c),
            _ => None,
        }
    }

    /// The image config, when this is one.
    pub fn as_image(&self) -> Option<&ImageConfig> {
        match self {
            TypedConfig::Image(c) => Some(c),
            _ => None,
        }
    }
}

/// Only the worker kind that serves `model_type` can run it: the shared first check of every config.
pub(crate) fn wrong_type(model_type: ModelType, worker: &WorkerCapabilities) -> Option<Incompatibility> {
    (worker.kind.model_type() != model_type).then_some(Incompatibility::WrongModelType {
        worker: worker.kind,
        model_type,
    })
}
