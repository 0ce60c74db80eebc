//! The artifacts contract: the one typed definition of a model that every part of the project shares.
//!
//! The catalog writes [`ModelEntry`] values, the workers read them to load a model, the wasm module
//! hands them to the web UI, and the UI's TypeScript types are generated from these Rust types (feature
//! `ts`), so no two parts can disagree on what a model is. This crate depends on nothing else of ours.
//!
//! - [`id`]: catalog ids (`hf:org/name`, `civitai:123`, `file:path`), parsed and formatted losslessly.
//! - [`entry`]: the entry itself, its files and download status.
//! - [`config`]: the [`ModelConfig`] trait and the typed configs of each [`ModelType`].
//! - [`weights`]: which weight file names are pickle formats (refused by the catalog and the workers).
//! - [`compat`]: which worker can run an entry, with reasons and a memory estimate.

pub mod compat;
pub mod config;
pub mod entry;
pub mod id;
pub mod lora;
#[cfg(feature = "ts")]
pub mod typescript;
pub mod weights;

pub use compat::{
    Compatibility, DeviceKind, Incompatibility, LlmArchitecture, WorkerCapabilities, WorkerKind,
};
pub use config::{
    AudioConfig, CheckpointType, Distillation, Gated, ImageBase, ImageConfig, ImageVariant, LlmConfig,
    ModelConfig, ModelFamily, ModelType, PredictionType, PreviewImage, Resolution, SamplingDefaults,
    TokenizerInfo, TypedConfig, VideoConfig, WeightFormat,
};
pub use entry::{ArtifactStatus, FileRole, ModelEntry, ModelFile, ModelSource};
pub use id::{CatalogId, IdError, Selector};
