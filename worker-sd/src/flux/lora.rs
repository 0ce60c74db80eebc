//! LoRAs on the Flux transformer, in its three layouts: kohya (`lora_unet_double_blocks_0_img_attn_qkv`) and
//! the original Black Forest Labs / ComfyUI names (`diffusion_model.double_blocks.0.img_attn.qkv`) name the
//! original modules the model is built from; diffusers and ai-toolkit (`transformer.transformer_blocks.0.attn.to_q`)
//! name diffusers' modules, which are whole original modules or rows of a fused one (q, k, v of `qkv`; q, k,
//! v and the MLP input of a single block's `linear1`; the final norm's halves swapped), as
//! `weights::diffusers_to_original` converts the weights themselves.

use std::collections::HashMap;

use super::FluxTransformer;
use crate::lora::Slices;

/// diffusers' module names of a Flux transformer: whole original modules, and rows of fused ones.
pub struct DiffusersNames {
    /// diffusers' name to the original module.
    pub aliases: HashMap<String, String>,
    /// diffusers' name to the original module holding its rows, and where they are there.
    pub slices: Slices,
}

/// The names for `transformer`'s blocks, with widths read off its fused weights.
pub fn diffusers_names(transformer: &FluxTransformer) -> DiffusersNames {
    let tensors = transformer.tensors();
    let rows = |name: &str| {
        tensors
            .get(&format!("{name}.weight"))
            .and_then(|t| t.dims().first().copied())
    };
    let mut aliases: HashMap<String, String> = [
        ("x_embedder", "img_in"),
        ("context_embedder", "txt_in"),
        ("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer"),
        ("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer"),
        ("time_text_embed.text_embedder.linear_1", "vector_in.in_layer"),
        ("time_text_embed.text_embedder.linear_2", "vector_in.out_layer"),
        (
            "time_text_embed.guidance_embedder.linear_1",
            "guidance_in.in_layer",
        ),
        (
            "time_text_embed.guidance_embedder.linear_2",
            "guidance_in.out_layer",
        ),
        ("proj_out", "final_layer.linear"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let mut slices = HashMap::new();
    for i in 0.. {
        let (d, b) = (format!("double_blocks.{i}"), format!("transformer_blocks.{i}"));
        let Some(qkv) = rows(&format!("{d}.img_attn.qkv")) else {
            break;
        };
        let h = qkv / 3;
        for (side, names) in [
            ("img", ["attn.to_q", "attn.to_k", "attn.to_v"]),
            ("txt", ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"]),
        ] {
            for (j, name) in names.iter().enumerate() {
                slices.insert(
                    format!("{b}.{name}"),
                    (format!("{d}.{side}_attn.qkv"), vec![(0, j * h, h)]),
                );
            }
        }
        for (from, to) in [
            ("attn.to_out.0", "img_attn.proj"),
            ("attn.to_add_out", "txt_attn.proj"),
            ("ff.net.0.proj", "img_mlp.0"),
            ("ff.net.2", "img_mlp.2"),
            ("ff_context.net.0.proj", "txt_mlp.0"),
            ("ff_context.net.2", "txt_mlp.2"),
            ("norm1.linear", "img_mod.lin"),
            ("norm1_context.linear", "txt_mod.lin"),
        ] {
            aliases.insert(format!("{b}.{from}"), format!("{d}.{to}"));
        }
    }
    for i in 0.. {
        let (s, b) = (
            format!("single_blocks.{i}"),
            format!("single_transformer_blocks.{i}"),
        );
        // linear2 maps (attention + MLP) back to the hidden width: its rows are the width.
        let (Some(linear1), Some(h)) = (rows(&format!("{s}.linear1")), rows(&format!("{s}.linear2"))) else {
            break;
        };
        for (j, name) in ["attn.to_q", "attn.to_k", "attn.to_v"].iter().enumerate() {
            slices.insert(
                format!("{b}.{name}"),
                (format!("{s}.linear1"), vec![(0, j * h, h)]),
            );
        }
        let mlp = linear1.saturating_sub(3 * h);
        slices.insert(
            format!("{b}.proj_mlp"),
            (format!("{s}.linear1"), vec![(0, 3 * h, mlp)]),
        );
        aliases.insert(format!("{b}.proj_out"), format!("{s}.linear2"));
        aliases.insert(format!("{b}.norm.linear"), format!("{s}.modulation.lin"));
    }
    // diffusers' final norm is (scale, shift), the original's (shift, scale).
    if let Some(rows) = rows("final_layer.adaLN_modulation.1") {
        let half = rows / 2;
        let swapped = vec![(0, half, half), (half, 0, half)];
        slices.insert(
            "norm_out.linear".into(),
            ("final_layer.adaLN_modulation.1".into(), swapped),
        );
    }
    DiffusersNames { aliases, slices }
}
