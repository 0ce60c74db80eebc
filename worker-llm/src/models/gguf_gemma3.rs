//! GGUF Gemma 3 (text).

use artifacts_contract::{ModelFamily, WeightFormat};

use super::Architecture;
use super::decoder::Spec;

/// Registration of this architecture.
pub const ARCHITECTURE: Architecture = Architecture {
    family: ModelFamily::Gemma3,
    format: WeightFormat::Gguf,
    names: &["gemma3"],
    spec: Spec::GEMMA3,
};
