//! Safetensors Gemma 2.

use artifacts_contract::{ModelFamily, WeightFormat};

use super::Architecture;
use super::decoder::Spec;

/// Registration of this architecture.
pub const ARCHITECTURE: Architecture = Architecture {
    family: ModelFamily::Gemma2,
    format: WeightFormat::Safetensors,
    names: &["gemma2"],
    spec: Spec::GEMMA2,
};
