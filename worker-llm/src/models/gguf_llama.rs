//! GGUF Llama (Llama 2/3.x, SmolLM, TinyLlama) and Mistral.

use artifacts_contract::{ModelFamily, WeightFormat};

use super::Architecture;
use super::decoder::Spec;

/// Registration of this architecture.
pub const ARCHITECTURE: Architecture = Architecture {
    family: ModelFamily::Llama,
    format: WeightFormat::Gguf,
    names: &["llama", "mistral"],
    spec: Spec::LLAMA,
};
