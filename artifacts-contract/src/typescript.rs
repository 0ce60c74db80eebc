//! TypeScript declarations generated from the contract's Rust types, so the UI never redeclares them.
//!
//! `ts/src/generated/contract.d.ts` is this module's output, committed; a test fails when it is stale
//! (`UPDATE_TS=1 cargo test -p artifacts-contract` rewrites it).

use tsify::Tsify;

use crate::compat::{Compatibility, DeviceKind, LlmArchitecture, WorkerCapabilities, WorkerKind};
use crate::config::{
    AudioConfig, CheckpointType, Distillation, Gated, ImageBase, ImageConfig, ImageVariant, LlmConfig,
    ModelFamily, ModelType, PredictionType, PreviewImage, Resolution, SamplingDefaults, TokenizerInfo,
    TypedConfig, VideoConfig, WeightFormat,
};
use crate::entry::{ArtifactStatus, FileRole, ModelEntry, ModelFile, ModelSource};

/// Every exported declaration, in a stable order, as one `.d.ts` text.
pub fn declarations() -> String {
    let decls = [
        ModelType::DECL,
        ModelSource::DECL,
        FileRole::DECL,
        ModelFile::DECL,
        ArtifactStatus::DECL,
        ModelFamily::DECL,
        WeightFormat::DECL,
        Gated::DECL,
        TokenizerInfo::DECL,
        SamplingDefaults::DECL,
        LlmConfig::DECL,
        ImageBase::DECL,
        ImageVariant::DECL,
        Distillation::DECL,
        PredictionType::DECL,
        CheckpointType::DECL,
        Resolution::DECL,
        PreviewImage::DECL,
        ImageConfig::DECL,
        AudioConfig::DECL,
        VideoConfig::DECL,
        TypedConfig::DECL,
        ModelEntry::DECL,
        WorkerKind::DECL,
        DeviceKind::DECL,
        LlmArchitecture::DECL,
        WorkerCapabilities::DECL,
        Compatibility::DECL,
    ];
    let mut out = String::from(
        "// Generated from the Rust types in artifacts-contract by `UPDATE_TS=1 cargo test -p artifacts-contract`.\n\
         // Do not edit: change the Rust types and regenerate.\n\n",
    );
    for decl in decls {
        out.push_str(decl.trim());
        out.push_str("\n\n");
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}
