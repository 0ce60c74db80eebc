//! LoRA and LyCORIS adapters: found by catalog id, entry name or path, checked against the model's base
//! through the contract, and merged into a copy of the weights they touch so the base model is never
//! reloaded and a request without them gets the plain model back exactly.
//!
//! A pipeline keeps its base tensors; [`patch`] returns new tensor maps where only the adapted weights
//! are new (`base + weight · Δ`, every other tensor shared; a module that is rows of a fused weight, as
//! diffusers names Flux's q, k and v, adds to those rows), plus a [`LoraReport`] per adapter saying how
//! many of its tensors found a place. An adapter that places nothing is an error naming its first keys;
//! [`check`] finds the same errors and misshapen tensors from names and shapes alone.

mod formats;
mod library;
mod merged;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use artifacts_contract::ImageBase;
use candle_core::{DType, Tensor};
use serde::Serialize;

use crate::error::{Result, SdError};
pub use library::{Library, addnet_hash, file_sha256};
pub use merged::{Merged, cast, no_aliases, no_slices};

/// A LoRA asked for by a request: a catalog id, a LoRA entry's name or a path, and its multiplier.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// Catalog id, entry name or `.safetensors` path.
    pub model: String,
    /// Multiplier of its difference (1 = as trained).
    pub weight: f64,
}

/// A loaded adapter file.
pub struct LoraFile {
    /// The name the request used (written into the PNG parameters).
    pub name: String,
    /// Where it was read from.
    pub path: PathBuf,
    /// AUTOMATIC1111's short hash: the first 12 hex digits of the SHA-256 of the tensor data (after the
    /// safetensors header), as CivitAI's "AutoV3" and the `Lora hashes` parameter use.
    pub short_hash: String,
    /// The base its tensor names imply (`Other` when they do not tell).
    pub base: ImageBase,
    /// Its tensors, on the CPU.
    pub tensors: HashMap<String, Tensor>,
}

impl std::fmt::Debug for LoraFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraFile")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// An adapter and its multiplier, as a validated request carries it.
#[derive(Debug, Clone)]
pub struct ActiveLora {
    /// The file.
    pub file: Arc<LoraFile>,
    /// Its multiplier.
    pub weight: f64,
}

/// What applying one adapter did, for the response and the log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoraReport {
    /// The adapter's name.
    pub name: String,
    /// Its multiplier.
    pub weight: f64,
    /// Tensors of the file that were applied.
    pub applied: usize,
    /// Tensors in the file.
    pub total: usize,
    /// The first keys that found no place in the model (at most 5).
    pub unplaced: Vec<String>,
}

impl LoraReport {
    /// A warning sentence when only part of the adapter applied.
    pub fn warning(&self) -> Option<String> {
        (self.applied < self.total).then(|| {
            format!(
                "LoRA {} applied {} of its {} tensors; not placed: {}",
                self.name,
                self.applied,
                self.total,
                self.unplaced.join(", ")
            )
        })
    }
}

/// Which part of a pipeline a module belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    /// The UNet or the Flux transformer.
    Denoiser,
    /// Text encoder `i` (0, or 1 for SDXL's second).
    Text(usize),
}

/// The weights of one component that adapters may change, and the names they go by.
pub struct Target<'a> {
    /// Which component.
    pub component: Component,
    /// Its base tensors.
    pub tensors: &'a HashMap<String, Tensor>,
    /// Extra names of its modules (the original LDM names of SDXL's UNet) to their module paths.
    pub aliases: &'a HashMap<String, String>,
    /// Names of modules whose rows are rows of another weight (diffusers' `to_q` of Flux's fused `qkv`,
    /// its `norm_out` of the original's swapped halves).
    pub slices: &'a Slices,
}

/// Rows of a module's weight found elsewhere in another: `(from, to, count)`.
pub type Rows = Vec<(usize, usize, usize)>;

/// Module names to the module that holds their rows, and where.
pub type Slices = HashMap<String, (String, Rows)>;

/// Where a module's difference goes: a weight key, and the rows of it when the module is a slice.
#[derive(Clone)]
struct Place {
    key: String,
    rows: Option<Rows>,
}

impl Place {
    /// The shape the module's difference has: the weight's, or as many rows as the slice moves.
    fn shape(&self, weight: &Tensor) -> Vec<usize> {
        let mut dims = weight.dims().to_vec();
        if let (Some(rows), Some(first)) = (&self.rows, dims.first_mut()) {
            *first = rows.iter().map(|(_, _, count)| count).sum();
        }
        dims
    }

    /// `delta` (shaped as [`Place::shape`]) moved into the whole weight's rows, zeros elsewhere.
    fn spread(&self, delta: Tensor, weight: &Tensor) -> Result<Tensor> {
        let Some(rows) = &self.rows else {
            return Ok(delta);
        };
        let total = weight.dim(0)?;
        let mut spread = None;
        for &(from, to, count) in rows {
            let part = delta
                .narrow(0, from, count)?
                .pad_with_zeros(0, to, total - to - count)?;
            spread = Some(match spread {
                Some(sum) => (sum + part)?,
                None => part,
            });
        }
        spread.ok_or_else(|| SdError::invalid("loras", "a slice that moves no rows"))
    }
}

/// Strips `<lora:NAME:WEIGHT>` (and `<lyco:...>`) tags from a prompt, as the UIs write them: the
/// prompt without them, and the LoRAs they ask for (weight 1 when left out).
pub fn extract_tags(prompt: &str) -> Result<(String, Vec<LoraSpec>)> {
    let mut rest = prompt;
    let mut text = String::new();
    let mut specs = Vec::new();
    while let Some(start) = rest.find('<') {
        let tail = &rest[start + 1..];
        let tag = ["lora:", "lyco:"].iter().find(|p| tail.starts_with(*p));
        let (Some(tag), Some(end)) = (tag, tail.find('>')) else {
            text.push_str(&rest[..=start]);
            rest = tail;
            continue;
        };
        text.push_str(&rest[..start]);
        let body = &tail[tag.len()..end];
        // NAME may hold colons (catalog ids); the weight is the last field when it parses as a number.
        let (name, weight) = match body.rsplit_once(':') {
            Some((name, w)) if w.trim().parse::<f64>().is_ok() => (name, w.trim().parse().unwrap_or(1.0)),
            _ => (body, 1.0),
        };
        if name.trim().is_empty() {
            return Err(SdError::invalid("prompt", format!("<{tag}{body}> names no LoRA")));
        }
        specs.push(LoraSpec {
            model: name.trim().to_string(),
            weight,
        });
        rest = &tail[end + 1..];
    }
    text.push_str(rest);
    Ok((text.trim().to_string(), specs))
}

/// The format-neutral name of a module path: `text_model.` dropped, dots as underscores (kohya's).
fn flat(module: &str) -> String {
    let module = module.strip_prefix("text_model.").unwrap_or(module);
    let module = module.strip_prefix("text_model_").unwrap_or(module);
    module.replace('.', "_")
}

/// Where a LoRA module name points: its component and its flat name.
fn locate(module: &str) -> (Option<Component>, String) {
    const PREFIXES: &[(&str, Component)] = &[
        ("lora_unet_", Component::Denoiser),
        ("lora_transformer_", Component::Denoiser),
        // LyCORIS' own prefix for Flux (ComfyUI reads it as kohya's names).
        ("lycoris_", Component::Denoiser),
        ("lora_te1_", Component::Text(0)),
        ("lora_te2_", Component::Text(1)),
        ("lora_te_", Component::Text(0)),
        ("unet.", Component::Denoiser),
        ("transformer.", Component::Denoiser),
        ("diffusion_model.", Component::Denoiser),
        ("text_encoder_2.", Component::Text(1)),
        ("text_encoder.", Component::Text(0)),
        // ComfyUI's name of Flux's CLIP.
        ("text_encoders.clip_l.transformer.", Component::Text(0)),
    ];
    for (prefix, component) in PREFIXES {
        if let Some(rest) = module.strip_prefix(prefix) {
            return (Some(*component), flat(rest));
        }
    }
    (None, flat(module))
}

/// The base an adapter's tensor names imply.
pub fn detect_base(tensors: &HashMap<String, Tensor>) -> ImageBase {
    let has = |p: &str| tensors.keys().any(|k| k.contains(p));
    if has("lora_te2_") || has("text_encoder_2.") || has("lora_unet_input_blocks") {
        return ImageBase::Sdxl;
    }
    if has("double_blocks") || has("single_blocks") || has("single_transformer_blocks") {
        return ImageBase::Flux;
    }
    // SD 1.x and 2.x differ by their text encoder's width (768 and 1024).
    let width = tensors
        .iter()
        .find(|(k, _)| (k.starts_with("lora_te_") || k.starts_with("text_encoder.")) && k.contains("q_proj"))
        .and_then(|(k, t)| {
            let down = k.contains("down") || k.contains("lora_A");
            if down { t.dims().get(1).copied() } else { None }
        });
    match width {
        Some(768) => ImageBase::Sd1,
        Some(1024) => ImageBase::Sd2,
        _ => ImageBase::Other,
    }
}

/// A component's tensors by name.
pub type TensorMap = HashMap<String, Tensor>;

/// The module names of each target, flattened, to where their differences go.
fn indexes(targets: &[Target<'_>]) -> Vec<HashMap<String, Place>> {
    targets
        .iter()
        .map(|t| {
            let whole = |key: String| Place { key, rows: None };
            let mut index: HashMap<String, Place> = t
                .tensors
                .keys()
                .filter_map(|k| k.strip_suffix(".weight").map(|m| (flat(m), whole(k.clone()))))
                .collect();
            for (alias, module) in t.aliases {
                index.insert(flat(alias), whole(format!("{module}.weight")));
            }
            for (alias, (module, rows)) in t.slices {
                let place = Place {
                    key: format!("{module}.weight"),
                    rows: Some(rows.clone()),
                };
                index.insert(flat(alias), place);
            }
            index
        })
        .collect()
}

/// A module of an adapter and where it goes: (module name, target index, place).
type Placement = (String, usize, Place);

/// Where each module of `lora` goes, and the report of what found a place.
fn place(
    targets: &[Target<'_>],
    indexes: &[HashMap<String, Place>],
    lora: &ActiveLora,
) -> (Vec<Placement>, LoraReport) {
    let grouped = formats::group(&lora.file.tensors);
    let mut placed = Vec::new();
    let mut applied = 0;
    let mut unplaced: Vec<String> = grouped.unknown.clone();
    for (module, parts) in &grouped.modules {
        let (component, name) = locate(module);
        let found = targets.iter().enumerate().find_map(|(i, t)| {
            let place = indexes[i].get(&name)?;
            component
                .is_none_or(|c| c == t.component)
                .then(|| (i, place.clone()))
        });
        match found {
            Some((i, place)) => {
                applied += parts.tensor_count();
                placed.push((module.clone(), i, place));
            }
            None => unplaced.push(module.clone()),
        }
    }
    unplaced.sort();
    let report = LoraReport {
        name: lora.file.name.clone(),
        weight: lora.weight,
        applied,
        total: lora.file.tensors.len(),
        unplaced: unplaced.into_iter().take(5).collect(),
    };
    (placed, report)
}

/// What [`patch`] would report for `loras`, without merging anything.
pub fn reports(targets: &[Target<'_>], loras: &[ActiveLora]) -> Vec<LoraReport> {
    let indexes = indexes(targets);
    loras.iter().map(|l| place(targets, &indexes, l).1).collect()
}

/// The identity of a LoRA set (paths and weights), for caching the models it makes.
pub fn set_key(loras: &[ActiveLora]) -> String {
    loras
        .iter()
        .map(|l| format!("{}:{}", l.file.path.display(), l.weight))
        .collect::<Vec<_>>()
        .join("|")
}

/// What [`patch`] would report for `loras`, with every placed module's shapes checked against its weight
/// and the same errors, without computing anything: how a request is refused before it queues.
pub fn check(targets: &[Target<'_>], loras: &[ActiveLora]) -> Result<Vec<LoraReport>> {
    let indexes = indexes(targets);
    loras
        .iter()
        .map(|lora| {
            let (placed, report) = place(targets, &indexes, lora);
            refuse_unplaced(&report)?;
            let grouped = formats::group(&lora.file.tensors);
            for (module, i, place) in placed {
                let shape = place.shape(&targets[i].tensors[&place.key]);
                grouped.modules[&module].check(&module, &shape)?;
            }
            Ok(report)
        })
        .collect()
}

/// An adapter that places none of its tensors is an error naming its first keys.
fn refuse_unplaced(report: &LoraReport) -> Result<()> {
    if report.applied > 0 {
        return Ok(());
    }
    Err(SdError::invalid(
        "loras",
        format!(
            "LoRA {} matches nothing in this model; first keys it could not place: {}",
            report.name,
            report.unplaced.join(", ")
        ),
    ))
}

/// Merges `loras` into copies of `targets`' tensor maps: one map per target (shared tensors except the
/// adapted ones) and one report per adapter. An adapter that places none of its tensors is an error.
pub fn patch(targets: &[Target<'_>], loras: &[ActiveLora]) -> Result<(Vec<TensorMap>, Vec<LoraReport>)> {
    let indexes = indexes(targets);
    let mut maps: Vec<HashMap<String, Tensor>> = targets.iter().map(|t| t.tensors.clone()).collect();
    let mut reports = Vec::with_capacity(loras.len());
    for lora in loras {
        let (placed, report) = place(targets, &indexes, lora);
        refuse_unplaced(&report)?;
        let grouped = formats::group(&lora.file.tensors);
        for (module, i, place) in placed {
            // The current tensor: a slice of a fused weight adds to what the other slices merged.
            let base = &maps[i][&place.key];
            let delta = grouped.modules[&module].delta(&module, &place.shape(base))?;
            let delta = place.spread(delta.to_device(base.device())?, base)?;
            let merged = (base.to_dtype(DType::F32)? + (delta * lora.weight)?)?.to_dtype(base.dtype())?;
            // The sum comes out row-major: a weight laid out for the CPU's GEMM keeps that layout.
            let merged = match crate::cpu::linear::is_column_major(base) {
                true => crate::cpu::linear::column_major(merged)?,
                false => merged,
            };
            maps[i].insert(place.key, merged);
        }
        reports.push(report);
    }
    Ok((maps, reports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_tags_are_stripped_with_their_weights() {
        let (prompt, specs) =
            extract_tags("a cat <lora:detail:0.8>, <lora:hf:org/x:1.5> <lyco:style> <b>bold</b>").unwrap();
        assert_eq!(prompt, "a cat ,   <b>bold</b>");
        assert_eq!(
            specs,
            vec![
                LoraSpec {
                    model: "detail".into(),
                    weight: 0.8
                },
                LoraSpec {
                    model: "hf:org/x".into(),
                    weight: 1.5
                },
                LoraSpec {
                    model: "style".into(),
                    weight: 1.0
                },
            ]
        );
        assert!(extract_tags("<lora::0.5>").is_err());
    }

    #[test]
    fn kohya_and_peft_names_meet_the_same_module() {
        let unet = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";
        assert_eq!(
            locate(&format!("lora_unet_{}", unet.replace('.', "_"))),
            (Some(Component::Denoiser), flat(unet))
        );
        assert_eq!(
            locate(&format!("unet.{unet}")),
            (Some(Component::Denoiser), flat(unet))
        );
        assert_eq!(
            locate("lora_te_text_model_encoder_layers_0_self_attn_q_proj"),
            locate("text_encoder.text_model.encoder.layers.0.self_attn.q_proj")
        );
        assert_eq!(
            flat("text_model.encoder.layers.0.mlp.fc1"),
            flat("encoder.layers.0.mlp.fc1")
        );
        // Flux: kohya's, LyCORIS', ComfyUI's and diffusers' names of one module.
        let qkv = (Some(Component::Denoiser), flat("double_blocks.0.img_attn.qkv"));
        assert_eq!(locate("lora_unet_double_blocks_0_img_attn_qkv"), qkv);
        assert_eq!(locate("lycoris_double_blocks_0_img_attn_qkv"), qkv);
        assert_eq!(locate("diffusion_model.double_blocks.0.img_attn.qkv"), qkv);
        assert_eq!(
            locate("lora_transformer_single_transformer_blocks_0_attn_to_q"),
            locate("transformer.single_transformer_blocks.0.attn.to_q")
        );
    }
}
