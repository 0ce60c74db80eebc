//! Flux transformer weights in whichever layout they come, renamed to the original Black Forest Labs
//! layout that candle's `flux::model::Flux` reads.
//!
//! Two layouts exist: the original one (`double_blocks.N.img_attn.qkv`, as `flux1-schnell.safetensors` and
//! the single-file checkpoints of CivitAI and ComfyUI ship it, the latter under `model.diffusion_model.`)
//! and diffusers' (`transformer_blocks.N.attn.to_q`, the `transformer/` folder of the HF repos). diffusers
//! splits the fused projections (q, k, v; and the single blocks' q, k, v, MLP-in) and stores the final
//! modulation as (scale, shift) where the original has (shift, scale); [`diffusers_to_original`] undoes
//! both, the inverse of diffusers' `convert_flux_transformer_checkpoint_to_diffusers`.

use super::{FluxError, Result};
use candle_core::Tensor;
use std::collections::HashMap;

/// Prefixes single-file checkpoints put before the transformer's own names.
const PREFIXES: &[&str] = &["model.diffusion_model.", "diffusion_model."];

/// Which naming a set of Flux transformer tensors follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Black Forest Labs' names (single-file checkpoints), what candle reads.
    Original,
    /// diffusers' `FluxTransformer2DModel` names (the HF repos' `transformer/` folder).
    Diffusers,
}

/// Strips a single-file prefix and tells the layout, so any Flux transformer file can be loaded.
pub fn normalize(tensors: HashMap<String, Tensor>) -> Result<(Layout, HashMap<String, Tensor>)> {
    let prefix = PREFIXES
        .iter()
        .find(|p| tensors.keys().any(|k| k.starts_with(*p)))
        .copied();
    let tensors: HashMap<String, Tensor> = match prefix {
        // Other components of an all-in-one checkpoint (VAE, text encoders) are not ours.
        Some(prefix) => tensors
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v)))
            .collect(),
        None => tensors,
    };
    if tensors.contains_key("img_in.weight") {
        Ok((Layout::Original, tensors))
    } else if tensors.contains_key("x_embedder.weight") {
        Ok((Layout::Diffusers, tensors))
    } else {
        Err(FluxError::Layout(
            "neither `img_in.weight` (original layout) nor `x_embedder.weight` (diffusers) is present".into(),
        ))
    }
}

/// The tensors in the original layout candle reads, whichever layout and prefix they came in.
pub fn original_layout(tensors: HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
    match normalize(tensors)? {
        (Layout::Original, tensors) => Ok(tensors),
        (Layout::Diffusers, tensors) => diffusers_to_original(tensors),
    }
}

/// Whether tensor names are a Flux transformer's (either layout, any single-file prefix), so a
/// checkpoint can be recognized from its safetensors header alone.
pub fn names_are_flux<'a>(names: impl IntoIterator<Item = &'a str>) -> bool {
    names.into_iter().any(|name| {
        let name = PREFIXES.iter().find_map(|p| name.strip_prefix(p)).unwrap_or(name);
        name.starts_with("double_blocks.0.img_attn.qkv.")
            || name.starts_with("single_transformer_blocks.0.proj_mlp.")
    })
}

/// The tensor names in a safetensors header, without reading the tensors; `None` when the file is not
/// safetensors.
pub fn safetensors_names(path: &std::path::Path) -> Option<Vec<String>> {
    use std::io::Read;
    let mut file = std::io::BufReader::new(std::fs::File::open(path).ok()?);
    let mut len = [0u8; 8];
    file.read_exact(&mut len).ok()?;
    let len = usize::try_from(u64::from_le_bytes(len)).ok()?;
    // Headers of the largest checkpoints are a few MB; more is not safetensors.
    if len > 100 << 20 {
        return None;
    }
    let mut header = vec![0u8; len];
    file.read_exact(&mut header).ok()?;
    let header: HashMap<String, serde_json::Value> = serde_json::from_slice(&header).ok()?;
    Some(header.into_keys().filter(|k| k != "__metadata__").collect())
}

/// Tensors moved from diffusers' names to the original ones, with a clear error naming the first missing.
struct Renamer {
    src: HashMap<String, Tensor>,
    out: HashMap<String, Tensor>,
}

impl Renamer {
    fn take(&mut self, name: &str) -> Result<Tensor> {
        self.src
            .remove(name)
            .ok_or_else(|| FluxError::MissingTensor(name.to_string()))
    }

    fn has(&self, name: &str) -> bool {
        self.src.contains_key(name)
    }

    /// A linear layer (weight and bias) under a new name.
    fn linear(&mut self, dst: &str, from: &str) -> Result<()> {
        for kind in ["weight", "bias"] {
            let t = self.take(&format!("{from}.{kind}"))?;
            self.out.insert(format!("{dst}.{kind}"), t);
        }
        Ok(())
    }

    /// Linear layers diffusers split, fused back along the output dimension in the given order.
    fn fused(&mut self, dst: &str, from: &[String]) -> Result<()> {
        for kind in ["weight", "bias"] {
            let parts = from
                .iter()
                .map(|f| self.take(&format!("{f}.{kind}")))
                .collect::<Result<Vec<_>>>()?;
            self.out.insert(format!("{dst}.{kind}"), Tensor::cat(&parts, 0)?);
        }
        Ok(())
    }

    /// An RMS norm: diffusers' `weight` is the original `scale`.
    fn norm(&mut self, dst: &str, from: &str) -> Result<()> {
        let t = self.take(&format!("{from}.weight"))?;
        self.out.insert(format!("{dst}.scale"), t);
        Ok(())
    }
}

/// Renames diffusers' Flux transformer tensors to the original layout, fusing what diffusers split.
/// Fails on a missing tensor, naming it; tensors it does not know are refused too, so a LoRA or another
/// model's weights are never silently ignored.
pub fn diffusers_to_original(tensors: HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
    let mut r = Renamer {
        src: tensors,
        out: HashMap::new(),
    };
    let embed = "time_text_embed";
    r.linear("time_in.in_layer", &format!("{embed}.timestep_embedder.linear_1"))?;
    r.linear(
        "time_in.out_layer",
        &format!("{embed}.timestep_embedder.linear_2"),
    )?;
    r.linear("vector_in.in_layer", &format!("{embed}.text_embedder.linear_1"))?;
    r.linear("vector_in.out_layer", &format!("{embed}.text_embedder.linear_2"))?;
    if r.has(&format!("{embed}.guidance_embedder.linear_1.weight")) {
        r.linear(
            "guidance_in.in_layer",
            &format!("{embed}.guidance_embedder.linear_1"),
        )?;
        r.linear(
            "guidance_in.out_layer",
            &format!("{embed}.guidance_embedder.linear_2"),
        )?;
    }
    r.linear("txt_in", "context_embedder")?;
    r.linear("img_in", "x_embedder")?;

    for i in 0.. {
        let (d, b) = (format!("double_blocks.{i}"), format!("transformer_blocks.{i}"));
        if !r.has(&format!("{b}.norm1.linear.weight")) {
            break;
        }
        r.linear(&format!("{d}.img_mod.lin"), &format!("{b}.norm1.linear"))?;
        r.linear(&format!("{d}.txt_mod.lin"), &format!("{b}.norm1_context.linear"))?;
        r.fused(
            &format!("{d}.img_attn.qkv"),
            &["to_q", "to_k", "to_v"].map(|p| format!("{b}.attn.{p}")),
        )?;
        let txt_qkv = ["add_q_proj", "add_k_proj", "add_v_proj"].map(|p| format!("{b}.attn.{p}"));
        r.fused(&format!("{d}.txt_attn.qkv"), &txt_qkv)?;
        r.norm(
            &format!("{d}.img_attn.norm.query_norm"),
            &format!("{b}.attn.norm_q"),
        )?;
        r.norm(
            &format!("{d}.img_attn.norm.key_norm"),
            &format!("{b}.attn.norm_k"),
        )?;
        r.norm(
            &format!("{d}.txt_attn.norm.query_norm"),
            &format!("{b}.attn.norm_added_q"),
        )?;
        r.norm(
            &format!("{d}.txt_attn.norm.key_norm"),
            &format!("{b}.attn.norm_added_k"),
        )?;
        r.linear(&format!("{d}.img_mlp.0"), &format!("{b}.ff.net.0.proj"))?;
        r.linear(&format!("{d}.img_mlp.2"), &format!("{b}.ff.net.2"))?;
        r.linear(&format!("{d}.txt_mlp.0"), &format!("{b}.ff_context.net.0.proj"))?;
        r.linear(&format!("{d}.txt_mlp.2"), &format!("{b}.ff_context.net.2"))?;
        r.linear(&format!("{d}.img_attn.proj"), &format!("{b}.attn.to_out.0"))?;
        r.linear(&format!("{d}.txt_attn.proj"), &format!("{b}.attn.to_add_out"))?;
    }
    for i in 0.. {
        let (s, b) = (
            format!("single_blocks.{i}"),
            format!("single_transformer_blocks.{i}"),
        );
        if !r.has(&format!("{b}.norm.linear.weight")) {
            break;
        }
        r.linear(&format!("{s}.modulation.lin"), &format!("{b}.norm.linear"))?;
        let parts = ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"].map(|p| format!("{b}.{p}"));
        r.fused(&format!("{s}.linear1"), &parts)?;
        r.norm(&format!("{s}.norm.query_norm"), &format!("{b}.attn.norm_q"))?;
        r.norm(&format!("{s}.norm.key_norm"), &format!("{b}.attn.norm_k"))?;
        r.linear(&format!("{s}.linear2"), &format!("{b}.proj_out"))?;
    }
    r.linear("final_layer.linear", "proj_out")?;
    for kind in ["weight", "bias"] {
        // diffusers' AdaLayerNormContinuous splits (scale, shift); the original splits (shift, scale).
        let t = r.take(&format!("norm_out.linear.{kind}"))?;
        let half = t.dim(0)? / 2;
        let swapped = Tensor::cat(&[t.narrow(0, half, half)?, t.narrow(0, 0, half)?], 0)?;
        r.out
            .insert(format!("final_layer.adaLN_modulation.1.{kind}"), swapped);
    }
    if let Some(name) = r.src.keys().min() {
        return Err(FluxError::Layout(format!(
            "unexpected tensor {name:?} in a diffusers Flux transformer"
        )));
    }
    Ok(r.out)
}
