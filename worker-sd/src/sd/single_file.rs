//! Single-file checkpoints (CivitAI's layout, the original LDM and `sgm` names) mapped to the diffusers
//! names the models read: `model.diffusion_model.*` (UNet, with SDXL's `label_emb`),
//! `first_stage_model.*` (VAE), and the text encoders: `cond_stage_model.transformer.*` (SD 1.x),
//! `cond_stage_model.model.*` (SD 2.x, OpenCLIP), `conditioner.embedders.0.transformer.*` and
//! `conditioner.embedders.1.model.*` (SDXL's CLIP-L and OpenCLIP bigG). The mapping follows diffusers'
//! `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint` and `convert_open_clip_checkpoint`,
//! derived from the configs so any block count and depth maps.

use std::collections::HashMap;

use candle_core::Tensor;

use super::unet::UnetConfig;
use super::vae::VaeConfig;

/// A checkpoint's tensors split by component, under diffusers names.
pub struct Components {
    /// UNet tensors.
    pub unet: HashMap<String, Tensor>,
    /// VAE tensors.
    pub vae: HashMap<String, Tensor>,
    /// CLIP text encoder tensors (transformers names).
    pub text_encoder: HashMap<String, Tensor>,
    /// SDXL's second text encoder (OpenCLIP bigG), in transformers names; empty for SD 1.x/2.x.
    pub text_encoder_2: HashMap<String, Tensor>,
}

/// What the UNet mapping needs to know of a UNet: its depth and which levels attend to the text.
pub struct UnetLayout {
    /// ResNet layers per level on the way down.
    pub layers_per_block: usize,
    /// Per level, whether its down block has attention (`CrossAttnDownBlock2D`).
    pub attention: Vec<bool>,
}

impl From<&UnetConfig> for UnetLayout {
    fn from(config: &UnetConfig) -> Self {
        UnetLayout {
            layers_per_block: config.layers_per_block,
            attention: (0..config.block_out_channels.len())
                .map(|i| {
                    config
                        .down_block_types
                        .get(i)
                        .is_some_and(|t| t.starts_with("CrossAttn"))
                })
                .collect(),
        }
    }
}

/// Which single-file layout the tensor names show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// SD 1.x: OpenAI CLIP under `cond_stage_model.transformer.`.
    Sd1,
    /// SD 2.x: OpenCLIP under `cond_stage_model.model.`.
    Sd2,
    /// Something else (SDXL's `conditioner.embedders.`, Flux...): see [`is_sdxl`].
    Other,
}

/// Tells the layout from the tensor names.
pub fn layout<'a>(mut names: impl Iterator<Item = &'a str>) -> Layout {
    let mut unet = false;
    let mut layout = Layout::Other;
    for name in names.by_ref() {
        unet |= name.starts_with("model.diffusion_model.input_blocks.");
        if name.starts_with("cond_stage_model.transformer.") {
            layout = Layout::Sd1;
        } else if name.starts_with("cond_stage_model.model.") {
            layout = Layout::Sd2;
        } else if name.starts_with("conditioner.") {
            return Layout::Other;
        }
    }
    if unet { layout } else { Layout::Other }
}

/// Whether the tensor names are an SDXL single file (a UNet and `sgm`'s two text embedders).
pub fn is_sdxl<'a>(names: impl Iterator<Item = &'a str>) -> bool {
    let (mut unet, mut embedder) = (false, false);
    for name in names {
        unet |= name.starts_with("model.diffusion_model.input_blocks.");
        embedder |= name.starts_with("conditioner.embedders.1.model.");
    }
    unet && embedder
}

/// Splits and renames an SD 1.x/2.x single-file checkpoint's tensors (see [`split_layout`]).
pub fn split(
    tensors: HashMap<String, Tensor>,
    unet: &UnetConfig,
    vae: &VaeConfig,
) -> candle_core::Result<Components> {
    split_layout(tensors, &UnetLayout::from(unet), vae)
}

/// Splits and renames a single-file checkpoint's tensors. Unknown names (EMA copies, training state)
/// are dropped.
pub fn split_layout(
    tensors: HashMap<String, Tensor>,
    unet: &UnetLayout,
    vae: &VaeConfig,
) -> candle_core::Result<Components> {
    let unet_map = unet_prefixes(unet);
    let vae_map = vae_prefixes(vae);
    let mut out = Components {
        unet: HashMap::new(),
        vae: HashMap::new(),
        text_encoder: HashMap::new(),
        text_encoder_2: HashMap::new(),
    };
    let (mut open_clip, mut open_clip_2) = (HashMap::new(), HashMap::new());
    for (name, tensor) in tensors {
        if let Some(rest) = name.strip_prefix("model.diffusion_model.") {
            if let Some(new) = rename(rest, &unet_map, unet_inner) {
                out.unet.insert(new, tensor);
            }
        } else if let Some(rest) = name.strip_prefix("first_stage_model.") {
            let new = rename(rest, &vae_map, vae_inner).unwrap_or_else(|| rest.to_string());
            out.vae.insert(new, tensor);
        } else if let Some(rest) = name
            .strip_prefix("cond_stage_model.transformer.")
            .or_else(|| name.strip_prefix("conditioner.embedders.0.transformer."))
        {
            // transformers 5 names drop `text_model.`; the encoder reads either.
            let rest = rest.strip_prefix("text_model.").unwrap_or(rest);
            out.text_encoder.insert(rest.to_string(), tensor);
        } else if let Some(rest) = name.strip_prefix("cond_stage_model.model.") {
            open_clip.insert(rest.to_string(), tensor);
        } else if let Some(rest) = name.strip_prefix("conditioner.embedders.1.model.") {
            open_clip_2.insert(rest.to_string(), tensor);
        }
    }
    if !open_clip.is_empty() {
        out.text_encoder = super::open_clip::to_transformers(open_clip)?;
    }
    out.text_encoder_2 = super::open_clip::to_transformers(open_clip_2)?;
    Ok(out)
}

/// The original (LDM) module path of each diffusers UNet module path, the inverse of [`split_layout`]'s
/// renaming: how kohya's SDXL LoRAs (`lora_unet_input_blocks_4_1_...`) find their modules.
pub fn unet_ldm_names<'a>(
    unet: &UnetLayout,
    modules: impl Iterator<Item = &'a str>,
) -> HashMap<String, String> {
    const RESNET: [(&str, &str); 6] = [
        ("norm1.", "in_layers.0."),
        ("conv1.", "in_layers.2."),
        ("norm2.", "out_layers.0."),
        ("conv2.", "out_layers.3."),
        ("time_emb_proj.", "emb_layers.1."),
        ("conv_shortcut.", "skip_connection."),
    ];
    let prefixes = unet_prefixes(unet);
    modules
        .filter_map(|module| {
            let dotted = format!("{module}.");
            prefixes.iter().find_map(|(old, new, kind)| {
                let rest = dotted.strip_prefix(new.as_str())?;
                let rest = match kind {
                    Inner::Resnet => replace_start(rest, &RESNET),
                    _ => rest.to_string(),
                };
                let ldm = format!("{old}{rest}");
                Some((ldm.trim_end_matches('.').to_string(), module.to_string()))
            })
        })
        .collect()
}

/// `(original prefix, diffusers prefix, kind)`; `kind` picks the inner renaming.
type Prefixes = Vec<(String, String, Inner)>;

#[derive(Clone, Copy)]
enum Inner {
    None,
    Resnet,
    Attention,
}

fn rename(name: &str, prefixes: &Prefixes, inner: fn(&str, Inner) -> String) -> Option<String> {
    prefixes.iter().find_map(|(old, new, kind)| {
        name.strip_prefix(old.as_str())
            .map(|rest| format!("{new}{}", inner(rest, *kind)))
    })
}

fn replace_start(rest: &str, pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .find_map(|(old, new)| rest.strip_prefix(old).map(|tail| format!("{new}{tail}")))
        .unwrap_or_else(|| rest.to_string())
}

fn unet_inner(rest: &str, kind: Inner) -> String {
    match kind {
        Inner::Resnet => replace_start(
            rest,
            &[
                ("in_layers.0.", "norm1."),
                ("in_layers.2.", "conv1."),
                ("out_layers.0.", "norm2."),
                ("out_layers.3.", "conv2."),
                ("emb_layers.1.", "time_emb_proj."),
                ("skip_connection.", "conv_shortcut."),
            ],
        ),
        _ => rest.to_string(),
    }
}

fn vae_inner(rest: &str, kind: Inner) -> String {
    match kind {
        Inner::Resnet => replace_start(rest, &[("nin_shortcut.", "conv_shortcut.")]),
        Inner::Attention => replace_start(
            rest,
            &[
                ("norm.", "group_norm."),
                ("q.", "to_q."),
                ("k.", "to_k."),
                ("v.", "to_v."),
                ("proj_out.", "to_out.0."),
            ],
        ),
        Inner::None => rest.to_string(),
    }
}

fn unet_prefixes(config: &UnetLayout) -> Prefixes {
    let p = |old: String, new: &str, kind| (old, new.to_string(), kind);
    let layers = config.layers_per_block;
    let blocks = config.attention.len();
    let attn = |i: usize| config.attention.get(i).copied().unwrap_or(false);
    // Up blocks mirror the down blocks: up block i has attention when down block (blocks-1-i) has.
    let up_attn = |i: usize| attn(blocks - 1 - i);
    let mut out = vec![
        p("time_embed.0.".into(), "time_embedding.linear_1.", Inner::None),
        p("time_embed.2.".into(), "time_embedding.linear_2.", Inner::None),
        // SDXL's `text_time` embedding.
        p("label_emb.0.0.".into(), "add_embedding.linear_1.", Inner::None),
        p("label_emb.0.2.".into(), "add_embedding.linear_2.", Inner::None),
        p("input_blocks.0.0.".into(), "conv_in.", Inner::None),
        p("out.0.".into(), "conv_norm_out.", Inner::None),
        p("out.2.".into(), "conv_out.", Inner::None),
        p("middle_block.0.".into(), "mid_block.resnets.0.", Inner::Resnet),
        p("middle_block.1.".into(), "mid_block.attentions.0.", Inner::None),
        p("middle_block.2.".into(), "mid_block.resnets.1.", Inner::Resnet),
    ];
    for i in 0..blocks {
        for j in 0..layers {
            let n = (layers + 1) * i + j + 1;
            out.push(p(
                format!("input_blocks.{n}.0."),
                &format!("down_blocks.{i}.resnets.{j}."),
                Inner::Resnet,
            ));
            if attn(i) {
                out.push(p(
                    format!("input_blocks.{n}.1."),
                    &format!("down_blocks.{i}.attentions.{j}."),
                    Inner::None,
                ));
            }
        }
        if i + 1 < blocks {
            let n = (layers + 1) * (i + 1);
            out.push(p(
                format!("input_blocks.{n}.0.op."),
                &format!("down_blocks.{i}.downsamplers.0.conv."),
                Inner::None,
            ));
        }
        for j in 0..=layers {
            let n = (layers + 1) * i + j;
            out.push(p(
                format!("output_blocks.{n}.0."),
                &format!("up_blocks.{i}.resnets.{j}."),
                Inner::Resnet,
            ));
            if up_attn(i) {
                out.push(p(
                    format!("output_blocks.{n}.1."),
                    &format!("up_blocks.{i}.attentions.{j}."),
                    Inner::None,
                ));
            }
        }
        if i + 1 < blocks {
            let n = (layers + 1) * i + layers;
            let k = if up_attn(i) { 2 } else { 1 };
            out.push(p(
                format!("output_blocks.{n}.{k}."),
                &format!("up_blocks.{i}.upsamplers.0."),
                Inner::None,
            ));
        }
    }
    out
}

fn vae_prefixes(config: &VaeConfig) -> Prefixes {
    let p = |old: String, new: String, kind| (old, new, kind);
    let blocks = config.block_out_channels.len();
    let layers = config.layers_per_block;
    let mut out = vec![
        p(
            "encoder.norm_out.".into(),
            "encoder.conv_norm_out.".into(),
            Inner::None,
        ),
        p(
            "decoder.norm_out.".into(),
            "decoder.conv_norm_out.".into(),
            Inner::None,
        ),
    ];
    for side in ["encoder", "decoder"] {
        out.push(p(
            format!("{side}.mid.attn_1."),
            format!("{side}.mid_block.attentions.0."),
            Inner::Attention,
        ));
        for i in 0..2 {
            out.push(p(
                format!("{side}.mid.block_{}.", i + 1),
                format!("{side}.mid_block.resnets.{i}."),
                Inner::Resnet,
            ));
        }
    }
    for i in 0..blocks {
        let up = blocks - 1 - i;
        for j in 0..layers {
            out.push(p(
                format!("encoder.down.{i}.block.{j}."),
                format!("encoder.down_blocks.{i}.resnets.{j}."),
                Inner::Resnet,
            ));
        }
        for j in 0..=layers {
            out.push(p(
                format!("decoder.up.{up}.block.{j}."),
                format!("decoder.up_blocks.{i}.resnets.{j}."),
                Inner::Resnet,
            ));
        }
        if i + 1 < blocks {
            out.push(p(
                format!("encoder.down.{i}.downsample."),
                format!("encoder.down_blocks.{i}.downsamplers.0."),
                Inner::None,
            ));
            out.push(p(
                format!("decoder.up.{up}.upsample."),
                format!("decoder.up_blocks.{i}.upsamplers.0."),
                Inner::None,
            ));
        }
    }
    out
}
