//! Whether a worker can run an entry, and if not, why, in words a person can act on.
//!
//! The capabilities of our two workers are declared here, in the contract, because the catalog and the
//! web UI must answer "which worker runs this?" without depending on the workers. Each worker tests its
//! own architecture and scheduler registries against these declarations, so they cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::config::{CheckpointType, ImageBase, ImageVariant, ModelFamily, ModelType, WeightFormat};
use crate::entry::ModelEntry;

/// The kinds of worker this project ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "lowercase")]
pub enum WorkerKind {
    /// `worker-llm`: text generation.
    Llm,
    /// `worker-sd`: image generation.
    Sd,
}

impl WorkerKind {
    /// Both kinds, for "which workers can run it" listings.
    pub const ALL: [WorkerKind; 2] = [WorkerKind::Llm, WorkerKind::Sd];

    /// The binary's name, as messages say it.
    pub fn binary(self) -> &'static str {
        match self {
            WorkerKind::Llm => "worker-llm",
            WorkerKind::Sd => "worker-sd",
        }
    }

    /// The model type this kind of worker serves.
    pub fn model_type(self) -> ModelType {
        match self {
            WorkerKind::Llm => ModelType::Llm,
            WorkerKind::Sd => ModelType::Image,
        }
    }
}

impl std::fmt::Display for WorkerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.binary())
    }
}

/// Where a worker computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// The CPU (always built).
    Cpu,
    /// An NVIDIA GPU (cargo feature `cuda`).
    Cuda,
    /// An Apple GPU (cargo feature `metal`).
    Metal,
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
            DeviceKind::Metal => "metal",
        })
    }
}

/// What one worker build can run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "camelCase")]
pub struct WorkerCapabilities {
    /// Which worker.
    pub kind: WorkerKind,
    /// LLM families it has an implementation for.
    #[serde(default)]
    pub families: Vec<ModelFamily>,
    /// Weight formats it reads.
    #[serde(default)]
    pub formats: Vec<WeightFormat>,
    /// Quantizations and dtypes it runs (upper case); empty means any.
    #[serde(default)]
    pub quantizations: Vec<String>,
    /// Image bases it has pipelines for.
    #[serde(default)]
    pub bases: Vec<ImageBase>,
    /// Image variants it supports.
    #[serde(default)]
    pub variants: Vec<ImageVariant>,
    /// Checkpoint types it loads as a model.
    #[serde(default)]
    pub checkpoint_types: Vec<CheckpointType>,
    /// Devices this build can use.
    #[serde(default)]
    pub devices: Vec<DeviceKind>,
}

/// GGUF types candle has kernels for, by llama.cpp file-type name, plus plain float dtypes.
const CANDLE_QUANTIZATIONS: &[&str] = &[
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M",
    "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",
];

impl WorkerCapabilities {
    /// What `worker-llm` declares it runs (on every device it may be built for).
    pub fn worker_llm() -> Self {
        WorkerCapabilities {
            kind: WorkerKind::Llm,
            families: vec![
                ModelFamily::Llama,
                ModelFamily::Mistral,
                ModelFamily::Phi,
                ModelFamily::Phi3,
                ModelFamily::Qwen2,
                ModelFamily::Qwen3,
                ModelFamily::Gemma,
                ModelFamily::Gemma2,
                ModelFamily::Gemma3,
            ],
            formats: vec![WeightFormat::Safetensors, WeightFormat::Gguf],
            quantizations: CANDLE_QUANTIZATIONS.iter().map(|s| s.to_string()).collect(),
            bases: Vec::new(),
            variants: Vec::new(),
            checkpoint_types: Vec::new(),
            devices: vec![DeviceKind::Cpu, DeviceKind::Cuda, DeviceKind::Metal],
        }
    }

    /// What `worker-sd` declares it runs.
    pub fn worker_sd() -> Self {
        WorkerCapabilities {
            kind: WorkerKind::Sd,
            families: Vec::new(),
            formats: vec![WeightFormat::Safetensors],
            quantizations: Vec::new(),
            bases: vec![ImageBase::Sd1, ImageBase::Sd2, ImageBase::Sdxl, ImageBase::Flux],
            variants: vec![ImageVariant::Normal, ImageVariant::Inpaint],
            checkpoint_types: vec![CheckpointType::Checkpoint],
            devices: vec![DeviceKind::Cpu, DeviceKind::Cuda, DeviceKind::Metal],
        }
    }

    /// The declared capabilities of a worker kind.
    pub fn builtin(kind: WorkerKind) -> Self {
        match kind {
            WorkerKind::Llm => Self::worker_llm(),
            WorkerKind::Sd => Self::worker_sd(),
        }
    }

    /// Whether a quantization or dtype name is runnable (`fp16` and `F16` are the same).
    pub fn supports_quantization(&self, name: &str) -> bool {
        if self.quantizations.is_empty() {
            return true;
        }
        let upper = name.trim().to_ascii_uppercase();
        let normalized = match upper.as_str() {
            "FP16" | "FLOAT16" => "F16",
            "FP32" | "FLOAT32" => "F32",
            "BFLOAT16" => "BF16",
            other => other,
        };
        self.quantizations.iter().any(|q| q == normalized)
    }
}

/// One reason a worker cannot run an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Incompatibility {
    /// The worker serves another model type.
    #[error("{worker} runs {} models, not {model_type} models", worker.model_type())]
    WrongModelType {
        /// The worker asked about.
        worker: WorkerKind,
        /// The entry's type.
        model_type: ModelType,
    },
    /// The weights are pickled Python objects.
    #[error("pickle weights are never loaded: they can run arbitrary code; use a safetensors or GGUF file")]
    Pickle,
    /// The weight format is not one the worker reads.
    #[error("{worker} does not read {format} weights")]
    Format {
        /// The worker asked about.
        worker: WorkerKind,
        /// The entry's format.
        format: WeightFormat,
    },
    /// No implementation of the architecture family.
    #[error("family {family}{} is not supported by {worker}", architecture.as_deref().map(|a| format!(" ({a})")).unwrap_or_default())]
    Family {
        /// The worker asked about.
        worker: WorkerKind,
        /// The entry's family.
        family: ModelFamily,
        /// The architecture name the source gave, to make `other` actionable.
        architecture: Option<String>,
    },
    /// A quantization without kernels in the worker.
    #[error("quantization {quantization} is not supported by {worker}")]
    Quantization {
        /// The worker asked about.
        worker: WorkerKind,
        /// The entry's quantization name.
        quantization: String,
    },
    /// No pipeline for the image base.
    #[error("base {base}{} is not supported by {worker}", base_model.as_deref().map(|b| format!(" ({b})")).unwrap_or_default())]
    Base {
        /// The worker asked about.
        worker: WorkerKind,
        /// The entry's base.
        base: ImageBase,
        /// The base name the source gave.
        base_model: Option<String>,
    },
    /// The image variant (depth, refiner...) is not supported.
    #[error("{variant} checkpoints are not supported by {worker}")]
    Variant {
        /// The worker asked about.
        worker: WorkerKind,
        /// The entry's variant.
        variant: ImageVariant,
    },
    /// LoRAs, embeddings and such are not models on their own.
    #[error("a {checkpoint_type} is not a whole model: {worker} loads full checkpoints")]
    CheckpointType {
        /// The worker asked about.
        worker: WorkerKind,
        /// The entry's checkpoint type.
        checkpoint_type: CheckpointType,
    },
    /// The worker was not built for the requested device.
    #[error("{worker} was not built for {device}")]
    Device {
        /// The worker asked about.
        worker: WorkerKind,
        /// The device requested.
        device: DeviceKind,
    },
}

/// The answer to "can this worker run this entry?", with reasons and a memory estimate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "camelCase")]
pub struct Compatibility {
    /// The worker asked about.
    pub worker: WorkerKind,
    /// True when `reasons` is empty.
    pub compatible: bool,
    /// Why not, one sentence each.
    pub reasons: Vec<String>,
    /// Estimated bytes of memory needed to load the entry and run one request.
    pub memory_bytes: u64,
}

/// Checks an entry against a worker's capabilities (and a device, when one is chosen).
pub fn check(entry: &ModelEntry, worker: &WorkerCapabilities, device: Option<DeviceKind>) -> Compatibility {
    let mut reasons = entry.config.incompatibilities(worker);
    let wrong_type = matches!(reasons.first(), Some(Incompatibility::WrongModelType { .. }));
    if !wrong_type && entry.pickle_files().next().is_some() && !reasons.contains(&Incompatibility::Pickle) {
        reasons.insert(0, Incompatibility::Pickle);
    }
    if let Some(device) = device
        && !worker.devices.contains(&device)
    {
        reasons.push(Incompatibility::Device {
            worker: worker.kind,
            device,
        });
    }
    Compatibility {
        worker: worker.kind,
        compatible: reasons.is_empty(),
        reasons: reasons.iter().map(ToString::to_string).collect(),
        memory_bytes: entry.config.memory_estimate(entry.weight_bytes()),
    }
}

/// Checks an entry against every worker this project ships.
pub fn check_all(entry: &ModelEntry) -> Vec<Compatibility> {
    WorkerKind::ALL
        .iter()
        .map(|k| check(entry, &WorkerCapabilities::builtin(*k), None))
        .collect()
}
