//! Safetensors Llama (Llama 2/3.x, SmolLM, TinyLlama).

use artifacts_contract::{ModelFamily, WeightFormat};

use super::Architecture;
use super::decoder::Spec;

/// Registration of this architecture.
pub const ARCHITECTURE: Architecture = Architecture {
    family: ModelFamily::Llama,
    format: WeightFormat::Safetensors,
    names: &["llama"],
    spec: Spec::LLAMA_HF,
};
