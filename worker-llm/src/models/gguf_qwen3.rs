//! GGUF Qwen3 (dense).

use artifacts_contract::{ModelFamily, WeightFormat};

use super::Architecture;
use super::decoder::Spec;

/// Registration of this architecture.
pub const ARCHITECTURE: Architecture = Architecture {
    family: ModelFamily::Qwen3,
    format: WeightFormat::Gguf,
    names: &["qwen3"],
    spec: Spec::QWEN3,
};
