//! Flux (FLUX.1 schnell and dev): the rectified-flow transformer ([`model`], on worker-sd's CPU kernels),
//! loaded from either weight layout, checked against diffusers' `FluxTransformer2DModel`.
//!
//! The model reads the original Black Forest Labs names; [`weights`] renames the diffusers layout
//! (HF repos) to them and strips the prefix single-file checkpoints carry. The transformer's shape comes
//! from diffusers' `transformer/config.json` when there is one, else from the tensors themselves.

mod base;
mod lora;
pub mod model;
mod ops;
pub mod pipeline;
pub mod tokenizer;
pub mod vae;
pub mod weights;

pub use base::{BASE, FluxImagePipeline, FluxModels};

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::flux::model::Config;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// Why Flux weights could not be loaded or run; each names the file, tensor or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum FluxError {
    /// A weight file that cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Weights in a format other than safetensors (pickle is never loaded).
    #[error("{0}: only .safetensors weights are loaded")]
    NotSafetensors(String),
    /// A tensor the transformer needs is absent.
    #[error("Flux weights lack tensor {0:?}")]
    MissingTensor(String),
    /// Tensors that are not a Flux transformer in a layout this worker knows.
    #[error("not a Flux transformer: {0}")]
    Layout(String),
    /// A `config.json` that does not parse or describes a transformer candle cannot build.
    #[error("bad Flux transformer config: {0}")]
    Config(String),
    /// An image size or latent shape that Flux cannot take.
    #[error("bad size: {0}")]
    Size(String),
    /// The step count or scheduler config was refused.
    #[error(transparent)]
    Scheduler(#[from] crate::schedulers::SchedulerError),
    /// A tensor operation failed (shapes or devices).
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

/// Shorthand for Flux results.
pub type Result<T> = std::result::Result<T, FluxError>;

/// diffusers' `transformer/config.json` for `FluxTransformer2DModel`, so the HF layout needs no guessing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TransformerConfig {
    /// Packed latent channels (16 latent channels × 2 × 2).
    pub in_channels: usize,
    /// Output channels, when they differ from the input (they never do for FLUX.1).
    #[serde(default)]
    pub out_channels: Option<usize>,
    /// Latent patch size; candle's model packs 2 × 2 outside and takes 1 here.
    #[serde(default = "one")]
    pub patch_size: usize,
    /// Double-stream blocks.
    pub num_layers: usize,
    /// Single-stream blocks.
    pub num_single_layers: usize,
    /// Width of one attention head.
    pub attention_head_dim: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Width of the T5 states.
    pub joint_attention_dim: usize,
    /// Width of the pooled CLIP vector.
    pub pooled_projection_dim: usize,
    /// Whether the guidance scale is an input (dev) or not (schnell).
    #[serde(default)]
    pub guidance_embeds: bool,
    /// How each head's width is split among the (index, row, column) rotary axes.
    pub axes_dims_rope: Vec<usize>,
}

fn one() -> usize {
    1
}

/// FLUX.1's rotary split for its 128-wide heads, the only one single-file checkpoints imply.
const FLUX1_AXES: [usize; 3] = [16, 56, 56];

impl TransformerConfig {
    /// Reads diffusers' `config.json`, naming the bad field on failure.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| FluxError::Config(e.to_string()))
    }

    /// candle's config for this shape; fails on shapes candle's model cannot build.
    pub fn to_candle(&self) -> Result<Config> {
        let hidden = self.attention_head_dim * self.num_attention_heads;
        if self.patch_size != 1 {
            return Err(FluxError::Config(format!(
                "patch_size {} (only 1 is supported)",
                self.patch_size
            )));
        }
        if self.out_channels.is_some_and(|c| c != self.in_channels) {
            return Err(FluxError::Config("out_channels differs from in_channels".into()));
        }
        if self.axes_dims_rope.iter().sum::<usize>() != self.attention_head_dim
            || self.axes_dims_rope.iter().any(|d| d % 2 == 1)
        {
            return Err(FluxError::Config(format!(
                "axes_dims_rope {:?} must be even and add up to attention_head_dim {}",
                self.axes_dims_rope, self.attention_head_dim
            )));
        }
        Ok(Config {
            in_channels: self.in_channels,
            vec_in_dim: self.pooled_projection_dim,
            context_in_dim: self.joint_attention_dim,
            hidden_size: hidden,
            mlp_ratio: 4.0,
            num_heads: self.num_attention_heads,
            depth: self.num_layers,
            depth_single_blocks: self.num_single_layers,
            axes_dim: self.axes_dims_rope.clone(),
            theta: 10_000,
            qkv_bias: true,
            guidance_embed: self.guidance_embeds,
        })
    }

    /// The shape of original-layout tensors, for single-file checkpoints that come without a config.
    /// The rotary split is not in the weights: FLUX.1's is assumed, so the heads must be 128 wide.
    pub fn infer(tensors: &HashMap<String, Tensor>) -> Result<Self> {
        Self::infer_with_axes(tensors, &FLUX1_AXES)
    }

    /// [`infer`](Self::infer) with a given rotary split, for Flux-like models whose heads are not FLUX.1's.
    pub fn infer_with_axes(tensors: &HashMap<String, Tensor>, axes: &[usize]) -> Result<Self> {
        let dims = |name: &str| -> Result<(usize, usize)> {
            let t = tensors
                .get(name)
                .ok_or_else(|| FluxError::MissingTensor(name.to_string()))?;
            Ok(t.dims2()?)
        };
        let (hidden, in_channels) = dims("img_in.weight")?;
        let (_, joint_attention_dim) = dims("txt_in.weight")?;
        let (_, pooled_projection_dim) = dims("vector_in.in_layer.weight")?;
        let head_dim = tensors
            .get("double_blocks.0.img_attn.norm.query_norm.scale")
            .or_else(|| tensors.get("single_blocks.0.norm.query_norm.scale"))
            .ok_or_else(|| FluxError::MissingTensor("double_blocks.0.img_attn.norm.query_norm.scale".into()))?
            .dim(0)?;
        if head_dim != axes.iter().sum::<usize>() {
            return Err(FluxError::Config(format!(
                "heads {head_dim} wide, but the rotary split {axes:?} adds up to {}; give a config.json",
                axes.iter().sum::<usize>()
            )));
        }
        let count = |prefix: &str| {
            (0..)
                .take_while(|i| tensors.keys().any(|k| k.starts_with(&format!("{prefix}.{i}."))))
                .count()
        };
        Ok(TransformerConfig {
            in_channels,
            out_channels: None,
            patch_size: 1,
            num_layers: count("double_blocks"),
            num_single_layers: count("single_blocks"),
            attention_head_dim: head_dim,
            num_attention_heads: hidden / head_dim,
            joint_attention_dim,
            pooled_projection_dim,
            guidance_embeds: tensors.contains_key("guidance_in.in_layer.weight"),
            axes_dims_rope: axes.to_vec(),
        })
    }
}

/// A loaded Flux transformer: the model plus what callers must know to feed it.
pub struct FluxTransformer {
    model: model::FluxModel,
    config: TransformerConfig,
    /// The weights in the original layout, in the model's dtype (shared with the model, not a copy), kept
    /// so LoRAs are merged into copies of the few they change and the model is rebuilt from memory.
    tensors: HashMap<String, Tensor>,
}

impl FluxTransformer {
    /// Loads diffusers' `transformer/` folder (`config.json` and one or more `.safetensors` shards).
    pub fn load_diffusers_folder(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let json = std::fs::read_to_string(&config_path).map_err(|source| FluxError::Io {
            path: config_path.display().to_string(),
            source,
        })?;
        let config = TransformerConfig::from_json(&json)?;
        let entries = std::fs::read_dir(dir).map_err(|source| FluxError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(FluxError::NotSafetensors(dir.display().to_string()));
        }
        let mut tensors = HashMap::new();
        for file in &files {
            tensors.extend(read_safetensors(file, device)?);
        }
        Self::from_tensors(tensors, Some(config), dtype, device)
    }

    /// Loads a single `.safetensors` file in either layout (original, with or without ComfyUI's prefix, or
    /// diffusers'). Without `config` the shape is read from the tensors (FLUX.1's rotary split assumed).
    pub fn load_file(
        path: &Path,
        config: Option<TransformerConfig>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::from_tensors(read_safetensors(path, device)?, config, dtype, device)
    }

    /// Builds the model from tensors in either layout.
    pub fn from_tensors(
        tensors: HashMap<String, Tensor>,
        config: Option<TransformerConfig>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let tensors = weights::original_layout(tensors)?
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_device(device)?.to_dtype(dtype)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        let config = match config {
            Some(config) => config,
            None => TransformerConfig::infer(&tensors)?,
        };
        Self::build(tensors, config, dtype, device)
    }

    /// The model around original-layout tensors already in `dtype` on `device`.
    fn build(
        tensors: HashMap<String, Tensor>,
        config: TransformerConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let checked = config.to_candle()?;
        let shape = model::Shape {
            heads: checked.num_heads,
            head_dim: config.attention_head_dim,
            axes_dim: checked.axes_dim,
            double: checked.depth,
            single: checked.depth_single_blocks,
            guidance: checked.guidance_embed,
        };
        // Linear weights column-major for the CPU's GEMM, as every pipeline keeps them.
        let tensors = tensors
            .into_iter()
            .map(|(k, v)| {
                let v = crate::cpu::linear::kept_layout(&k, v.to_device(device)?.to_dtype(dtype)?)?;
                Ok((k, v))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        let model = model::FluxModel::new(&tensors, shape).map_err(|e| FluxError::Layout(e.to_string()))?;
        Ok(FluxTransformer {
            model,
            config,
            tensors,
        })
    }

    /// The weights in the original layout, as LoRAs see them.
    pub fn tensors(&self) -> &HashMap<String, Tensor> {
        &self.tensors
    }

    /// The same transformer with other weights of the same names and shapes (a LoRA merged in).
    pub fn with_tensors(&self, tensors: HashMap<String, Tensor>) -> Result<Self> {
        let (dtype, device) = self
            .tensors
            .values()
            .next()
            .map(|t| (t.dtype(), t.device().clone()))
            .ok_or_else(|| FluxError::Layout("a transformer without weights".into()))?;
        Self::build(tensors, self.config.clone(), dtype, &device)
    }

    /// The transformer's shape, e.g. whether it takes a guidance scale.
    pub fn config(&self) -> &TransformerConfig {
        &self.config
    }

    /// The velocity at `timestep` (σ in [0, 1], one per batch item) for packed latents `img` (b, n, 64)
    /// and their ids (b, n, 3), T5 states `txt` (b, m, d) and ids (b, m, 3), pooled CLIP `vec` (b, d).
    /// `guidance` (one per batch item) is read by dev-style transformers and ignored by schnell-style ones.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        img: &Tensor,
        img_ids: &Tensor,
        txt: &Tensor,
        txt_ids: &Tensor,
        timestep: &Tensor,
        vec: &Tensor,
        guidance: Option<&Tensor>,
    ) -> Result<Tensor> {
        let guidance = guidance.filter(|_| self.config.guidance_embeds);
        if self.config.guidance_embeds && guidance.is_none() {
            return Err(FluxError::Config(
                "this transformer needs a guidance scale".into(),
            ));
        }
        Ok(self
            .model
            .forward(img, img_ids, txt, txt_ids, timestep, vec, guidance)?)
    }
}

/// Every tensor of a `.safetensors` file, refusing other formats by extension before reading.
pub(crate) fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    if path.extension().is_none_or(|e| e != "safetensors") {
        return Err(FluxError::NotSafetensors(path.display().to_string()));
    }
    crate::loading::read_safetensors(path, device).map_err(|e| match e {
        candle_core::Error::Io(source) => FluxError::Io {
            path: path.display().to_string(),
            source,
        },
        e => FluxError::Layout(format!("{}: {e}", path.display())),
    })
}
