//! OpenCLIP text encoders as single-file checkpoints store them (SD 2.x's ViT-H under
//! `cond_stage_model.model.`, SDXL's bigG under `conditioner.embedders.1.model.`), renamed to the
//! transformers names [`super::clip::ClipTextEncoder`] reads. The inverse of what diffusers'
//! `convert_open_clip_checkpoint` does: the fused `in_proj` is split into q, k and v, and
//! `text_projection` (stored `(hidden, projection)`, applied as `x @ P`) is transposed into a linear weight.

use std::collections::HashMap;

use candle_core::Tensor;

/// Renames the tensors of one OpenCLIP text model (names already stripped of their prefix, such as
/// `transformer.resblocks.0.ln_1.weight`). Names that are not part of the text encoder (`logit_scale`,
/// `attn_mask`) are dropped.
pub fn to_transformers(tensors: HashMap<String, Tensor>) -> candle_core::Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (name, tensor) in tensors {
        match name.as_str() {
            "positional_embedding" => {
                out.insert("embeddings.position_embedding.weight".into(), tensor);
            }
            "token_embedding.weight" => {
                out.insert("embeddings.token_embedding.weight".into(), tensor);
            }
            "ln_final.weight" | "ln_final.bias" => {
                let kind = name.rsplit('.').next().unwrap_or_default();
                out.insert(format!("final_layer_norm.{kind}"), tensor);
            }
            "text_projection" => {
                out.insert("text_projection.weight".into(), tensor.t()?.contiguous()?);
            }
            _ => {
                if let Some(rest) = name.strip_prefix("transformer.resblocks.") {
                    layer(rest, tensor, &mut out)?;
                }
            }
        }
    }
    Ok(out)
}

/// One tensor of `transformer.resblocks.{rest}`.
fn layer(rest: &str, tensor: Tensor, out: &mut HashMap<String, Tensor>) -> candle_core::Result<()> {
    let Some((index, inner)) = rest.split_once('.') else {
        return Ok(());
    };
    let prefix = format!("encoder.layers.{index}.");
    if let Some(kind) = inner.strip_prefix("attn.in_proj_") {
        // Fused (3 * hidden, ...) rows: q, then k, then v.
        let third = tensor.dim(0)? / 3;
        for (i, part) in ["q", "k", "v"].iter().enumerate() {
            let piece = tensor.narrow(0, i * third, third)?.contiguous()?;
            out.insert(format!("{prefix}self_attn.{part}_proj.{kind}"), piece);
        }
        return Ok(());
    }
    let renamed = [
        ("attn.out_proj.", "self_attn.out_proj."),
        ("ln_1.", "layer_norm1."),
        ("ln_2.", "layer_norm2."),
        ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."),
    ]
    .iter()
    .find_map(|(old, new)| inner.strip_prefix(old).map(|tail| format!("{new}{tail}")));
    if let Some(renamed) = renamed {
        out.insert(format!("{prefix}{renamed}"), tensor);
    }
    Ok(())
}

/// The text model's config from the tensors themselves: widths from the embeddings and MLP, depth from
/// the highest layer index. Heads cannot be read off the weights: OpenCLIP's are 64 wide.
pub fn config_of(tensors: &HashMap<String, Tensor>) -> Option<super::clip::ClipConfig> {
    let (vocab_size, hidden_size) = tensors.get("embeddings.token_embedding.weight")?.dims2().ok()?;
    let max_position_embeddings = tensors.get("embeddings.position_embedding.weight")?.dim(0).ok()?;
    let intermediate_size = tensors.get("encoder.layers.0.mlp.fc1.weight")?.dim(0).ok()?;
    let num_hidden_layers = tensors
        .keys()
        .filter_map(|k| {
            k.strip_prefix("encoder.layers.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()?
        + 1;
    let projection_dim = tensors.get("text_projection.weight").and_then(|t| t.dim(0).ok());
    Some(super::clip::ClipConfig {
        vocab_size,
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads: (hidden_size / 64).max(1),
        max_position_embeddings,
        hidden_act: "gelu".into(),
        layer_norm_eps: 1e-5,
        pad_token_id: Some(0),
        // transformers' legacy pooling rule (argmax of the ids), as SDXL's and SD 2.x's configs say.
        eos_token_id: Some(2),
        projection_dim,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn fused_qkv_is_split_and_the_projection_transposed() {
        let dev = Device::Cpu;
        let qkv = Tensor::arange(0f32, 6. * 2., &dev)
            .unwrap()
            .reshape((6, 2))
            .unwrap();
        let projection = Tensor::new(&[[1f32, 2., 3.], [4., 5., 6.]], &dev).unwrap();
        let tensors = HashMap::from([
            ("transformer.resblocks.3.attn.in_proj_weight".to_string(), qkv),
            (
                "transformer.resblocks.3.mlp.c_fc.bias".to_string(),
                Tensor::zeros(4, DType::F32, &dev).unwrap(),
            ),
            ("text_projection".to_string(), projection),
            ("logit_scale".to_string(), Tensor::new(1f32, &dev).unwrap()),
        ]);
        let out = to_transformers(tensors).unwrap();
        let rows = |name: &str| out[name].to_vec2::<f32>().unwrap();
        assert_eq!(
            rows("encoder.layers.3.self_attn.q_proj.weight"),
            [[0., 1.], [2., 3.]]
        );
        assert_eq!(
            rows("encoder.layers.3.self_attn.k_proj.weight"),
            [[4., 5.], [6., 7.]]
        );
        assert_eq!(
            rows("encoder.layers.3.self_attn.v_proj.weight"),
            [[8., 9.], [10., 11.]]
        );
        assert_eq!(rows("text_projection.weight"), [[1., 4.], [2., 5.], [3., 6.]]);
        assert!(out.contains_key("encoder.layers.3.mlp.fc1.bias"));
        assert_eq!(out.len(), 5, "logit_scale is dropped: {:?}", out.keys());
    }
}
