//! Safetensors Gemma.

use artifacts_contract::{ModelFamily, WeightFormat};

use super::Architecture;
use super::decoder::Spec;

/// Registration of this architecture.
pub const ARCHITECTURE: Architecture = Architecture {
    family: ModelFamily::Gemma,
    format: WeightFormat::Safetensors,
    names: &["gemma"],
    spec: Spec::GEMMA,
};
