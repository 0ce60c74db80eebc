//! `VideoConfig`: a minimal typed config for video-generation models; no worker runs them yet.

use serde::{Deserialize, Serialize};

use super::{ModelConfig, ModelType, Resolution, wrong_type};
use crate::compat::{Incompatibility, WorkerCapabilities};

/// Metadata of a video-generation model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "camelCase", default)]
pub struct VideoConfig {
    /// Base model as the source names it (`Wan Video`, `Hunyuan Video`, `SVD`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub base_model: Option<String>,
    /// Architecture as the source names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub architecture: Option<String>,
    /// Frame size it was trained at.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub resolution: Option<Resolution>,
    /// Frames per clip.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub frames: Option<u32>,
    /// Frames per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub fps: Option<u32>,
    /// Whether the source marks it not safe for work.
    pub nsfw: bool,
    /// License id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub license: Option<String>,
    /// Source tags.
    pub tags: Vec<String>,
}

/// The parameters a video worker would start from.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoParams {
    /// Frame size.
    pub resolution: Resolution,
    /// Frames per clip.
    pub frames: u32,
    /// Frames per second.
    pub fps: u32,
}

impl ModelConfig for VideoConfig {
    type Params = VideoParams;

    fn model_type(&self) -> ModelType {
        ModelType::Video
    }

    fn incompatibilities(&self, worker: &WorkerCapabilities) -> Vec<Incompatibility> {
        wrong_type(ModelType::Video, worker).into_iter().collect()
    }

    fn inference_params(&self) -> VideoParams {
        VideoParams {
            resolution: self.resolution.unwrap_or(Resolution {
                width: 832,
                height: 480,
            }),
            frames: self.frames.unwrap_or(81),
            fps: self.fps.unwrap_or(16),
        }
    }

    fn memory_estimate(&self, weight_bytes: u64) -> u64 {
        weight_bytes + (4u64 << 30)
    }
}
