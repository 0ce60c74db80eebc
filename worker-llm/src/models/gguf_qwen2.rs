//! GGUF Qwen2 and Qwen2.5.

use artifacts_contract::{ModelFamily, WeightFormat};

use super::Architecture;
use super::decoder::Spec;

/// Registration of this architecture.
pub const ARCHITECTURE: Architecture = Architecture {
    family: ModelFamily::Qwen2,
    format: WeightFormat::Gguf,
    names: &["qwen2"],
    spec: Spec::QWEN2,
};
