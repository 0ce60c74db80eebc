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
    /// LLM architectures it has an implementation for, each in the weight format it reads it from.
    #[serde(default)]
    pub llm_architectures: Vec<LlmArchitecture>,
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

/// One LLM family a worker runs, from one weight format: a GGUF `gemma2` and a safetensors `gemma2`
/// are different code paths, and a worker may have one without the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[serde(rename_all = "camelCase")]
pub struct LlmArchitecture {
    /// The weight format.
    pub format: WeightFormat,
    /// The family, as the catalog normalizes it.
    pub family: ModelFamily,
}

/// What `worker-llm` runs: the one declaration its architecture registry is tested against.
const WORKER_LLM_ARCHITECTURES: &[(WeightFormat, ModelFamily)] = &[
    (WeightFormat::Gguf, ModelFamily::Llama),
    (WeightFormat::Gguf, ModelFamily::Mistral),
    (WeightFormat::Gguf, ModelFamily::Qwen2),
    (WeightFormat::Gguf, ModelFamily::Qwen3),
    (WeightFormat::Gguf, ModelFamily::Phi3),
    (WeightFormat::Gguf, ModelFamily::Gemma3),
    (WeightFormat::Safetensors, ModelFamily::Llama),
    (WeightFormat::Safetensors, ModelFamily::Mistral),
    (WeightFormat::Safetensors, ModelFamily::Phi),
    (WeightFormat::Safetensors, ModelFamily::Phi3),
    (WeightFormat::Safetensors, ModelFamily::Qwen2),
    (WeightFormat::Safetensors, ModelFamily::Qwen3),
    (WeightFormat::Safetensors, ModelFamily::Gemma),
    (WeightFormat::Safetensors, ModelFamily::Gemma2),
    (WeightFormat::Safetensors, ModelFamily::Gemma3),
];

/// GGUF types candle has kernels for, by llama.cpp file-type name, plus plain float dtypes.
const CANDLE_QUANTIZATIONS: &[&str] = &[
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M",
    "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",
];

impl WorkerCapabilities {
    /// What `worker-llm` declares it runs (on every device it may be built for).
    pub fn worker_llm() -> Self {
        let llm_architectures: Vec<LlmArchitecture> = WORKER_LLM_ARCHITECTURES
            .iter()
            .map(|&(format, family)| LlmArchitecture { format, family })
            .collect();
        let mut formats: Vec<WeightFormat> = Vec::new();
        for a in &llm_architectures {
            if !formats.contains(&a.format) {
                formats.push(a.format);
            }
        }
        WorkerCapabilities {
            kind: WorkerKind::Llm,
            llm_architectures,
            formats,
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
            llm_architectures: Vec::new(),
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

    /// Whether the worker runs LLM `family` from `format` weights.
    pub fn runs_llm(&self, format: WeightFormat, family: ModelFamily) -> bool {
        self.llm_architectures
            .contains(&LlmArchitecture { format, family })
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
    /// No implementation of the architecture family in this weight format.
    #[error("family {family} ({architecture}) is not supported by {worker} in {format} files")]
    Family {
        /// The worker asked about.
        worker: WorkerKind,
        /// The entry's family.
        family: ModelFamily,
        /// The architecture name the source gave, to make `other` actionable.
        architecture: String,
        /// The entry's weight format.
        format: WeightFormat,
    },
    /// The file declares no tensors (llama.cpp's vocabulary-only GGUFs, a header written for tests).
    #[error("the file holds no weights (a vocabulary-only or header-only file): {worker} has nothing to run")]
    NoWeights {
        /// The worker asked about.
        worker: WorkerKind,
    },
    /// A safetensors LLM whose files hold no `tokenizer.json` (a repo of weights alone).
    #[error("its files hold no tokenizer.json: {worker} cannot turn text into tokens for it")]
    NoTokenizer {
        /// The worker asked about.
        worker: WorkerKind,
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
    if !wrong_type && needs_tokenizer_file(entry) && !entry.files.iter().any(is_tokenizer_json) {
        reasons.push(Incompatibility::NoTokenizer { worker: worker.kind });
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

/// A safetensors LLM carries its tokenizer in a file beside the weights (a GGUF carries it inside).
fn needs_tokenizer_file(entry: &ModelEntry) -> bool {
    matches!(&entry.config, crate::config::TypedConfig::Llm(c) if c.format == WeightFormat::Safetensors)
        && !entry.files.is_empty()
}

fn is_tokenizer_json(file: &crate::entry::ModelFile) -> bool {
    file.path.rsplit('/').next() == Some("tokenizer.json")
}

/// Checks an entry against every worker this project ships.
pub fn check_all(entry: &ModelEntry) -> Vec<Compatibility> {
    WorkerKind::ALL
        .iter()
        .map(|k| check(entry, &WorkerCapabilities::builtin(*k), None))
        .collect()
}
