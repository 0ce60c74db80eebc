//! Safetensors Mistral.

use artifacts_contract::{ModelFamily, WeightFormat};

use super::Architecture;
use super::decoder::Spec;

/// Registration of this architecture.
pub const ARCHITECTURE: Architecture = Architecture {
    family: ModelFamily::Mistral,
    format: WeightFormat::Safetensors,
    names: &["mistral"],
    spec: Spec::LLAMA_HF,
};
