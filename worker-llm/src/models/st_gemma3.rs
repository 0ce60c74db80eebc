//! Safetensors Gemma 3 (text, and the language model of the multimodal checkpoints).

use artifacts_contract::{ModelFamily, WeightFormat};

use super::Architecture;
use super::decoder::Spec;

/// Registration of this architecture.
pub const ARCHITECTURE: Architecture = Architecture {
    family: ModelFamily::Gemma3,
    format: WeightFormat::Safetensors,
    names: &["gemma3", "gemma3_text"],
    spec: Spec::GEMMA3,
};
