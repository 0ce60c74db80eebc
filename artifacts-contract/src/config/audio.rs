//! `AudioConfig`: a minimal typed config for speech and audio models; no worker runs them yet.

use serde::{Deserialize, Serialize};

use super::{ModelConfig, ModelType, wrong_type};
use crate::compat::{Incompatibility, WorkerCapabilities};

/// Metadata of an audio model (speech recognition, text to speech, music).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "camelCase", default)]
pub struct AudioConfig {
    /// Architecture as the source names it (`WhisperForConditionalGeneration`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub architecture: Option<String>,
    /// What it does, as the Hub's pipeline tag says (`automatic-speech-recognition`, `text-to-speech`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub task: Option<String>,
    /// Sample rate of the audio it reads or writes, in Hz.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub sample_rate: Option<u32>,
    /// Languages it handles.
    pub languages: Vec<String>,
    /// License id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(optional))]
    pub license: Option<String>,
    /// Source tags.
    pub tags: Vec<String>,
}

/// The parameters an audio worker would start from.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioParams {
    /// Sample rate in Hz (16 kHz, the speech-model norm, when unknown).
    pub sample_rate: u32,
}

impl ModelConfig for AudioConfig {
    type Params = AudioParams;

    fn model_type(&self) -> ModelType {
        ModelType::Audio
    }

    fn incompatibilities(&self, worker: &WorkerCapabilities) -> Vec<Incompatibility> {
        wrong_type(ModelType::Audio, worker).into_iter().collect()
    }

    fn inference_params(&self) -> AudioParams {
        AudioParams {
            sample_rate: self.sample_rate.unwrap_or(16_000),
        }
    }

    fn memory_estimate(&self, weight_bytes: u64) -> u64 {
        weight_bytes + weight_bytes / 5 + (128 << 20)
    }
}
