//! Safetensors Phi-1, Phi-1.5 and Phi-2.

use artifacts_contract::{ModelFamily, WeightFormat};

use super::Architecture;
use super::decoder::Spec;

/// Registration of this architecture.
pub const ARCHITECTURE: Architecture = Architecture {
    family: ModelFamily::Phi,
    format: WeightFormat::Safetensors,
    names: &["phi"],
    spec: Spec::PHI2,
};
