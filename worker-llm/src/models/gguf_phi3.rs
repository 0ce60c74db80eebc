//! GGUF Phi-3, Phi-3.5 and Phi-4 (LongRoPE files included).

use artifacts_contract::{ModelFamily, WeightFormat};

use super::Architecture;
use super::decoder::Spec;

/// Registration of this architecture.
pub const ARCHITECTURE: Architecture = Architecture {
    family: ModelFamily::Phi3,
    format: WeightFormat::Gguf,
    names: &["phi3"],
    spec: Spec::PHI3,
};
