//! The CLIP text encoder of Stable Diffusion, with every layer's hidden states so clip skip and SDXL's
//! penultimate-layer conditioning can be read off.
//!
//! candle-transformers has two CLIP text models, neither enough here: `clip::text_model` knows only
//! `quick_gelu` (SD 2.x and SDXL's second encoder use `gelu`) and `stable_diffusion::clip` cannot be
//! configured from a `config.json` (its fields are private). Both return only the last layer. This one
//! reads transformers' `config.json` and its weight names (with or without the `text_model.` prefix that
//! transformers 5 dropped) and is checked against transformers by `tests/integration/tiny_sd15.rs`.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use crate::layers::linear;

/// The fields of transformers' `CLIPTextConfig` the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipConfig {
    /// Token vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden states (768 for SD 1.x, 1024 for SD 2.x).
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// The longest token sequence (77).
    pub max_position_embeddings: usize,
    /// `quick_gelu` (OpenAI CLIP) or `gelu` (OpenCLIP).
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    /// Layer norm epsilon.
    #[serde(default = "layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// The token that pads prompts to `max_position_embeddings`, when the config names one.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// The end-of-text token, the default padding.
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    /// Width of `text_projection` (SDXL's second encoder), when the model has one.
    #[serde(default)]
    pub projection_dim: Option<usize>,
}

fn quick_gelu() -> String {
    "quick_gelu".into()
}

fn layer_norm_eps() -> f64 {
    1e-5
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm1: LayerNorm,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// A CLIP text encoder whose forward pass keeps the hidden state after each layer.
pub struct ClipTextEncoder {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<Layer>,
    final_layer_norm: LayerNorm,
    text_projection: Option<Linear>,
    config: ClipConfig,
}

/// The encoder's outputs for one batch of token ids.
pub struct ClipOutput {
    /// The hidden state after each encoder layer, first to last (without the final layer norm).
    pub hidden_states: Vec<Tensor>,
    /// The last hidden state after the final layer norm: what SD 1.x conditions on.
    pub last_hidden_state: Tensor,
}

impl ClipOutput {
    /// The conditioning as the UIs' clip skip picks it: 1 is the last layer, 2 the penultimate (with the
    /// final layer norm, as A1111 and diffusers' `clip_skip` apply it).
    pub fn with_clip_skip(&self, encoder: &ClipTextEncoder, clip_skip: usize) -> candle_core::Result<Tensor> {
        if clip_skip <= 1 {
            return Ok(self.last_hidden_state.clone());
        }
        let index = self.hidden_states.len().saturating_sub(clip_skip);
        encoder.final_layer_norm.forward(&self.hidden_states[index])
    }
}

impl ClipTextEncoder {
    /// Builds the encoder from transformers' weights, prefixed by `text_model.` or not.
    pub fn new(vb: VarBuilder, config: &ClipConfig) -> candle_core::Result<Self> {
        // `CLIPTextModelWithProjection` keeps its projection beside `text_model.`, without a bias.
        let text_projection = if vb.contains_tensor("text_projection.weight") {
            let out = config.projection_dim.unwrap_or(config.hidden_size);
            Some(candle_nn::linear_no_bias(
                config.hidden_size,
                out,
                vb.pp("text_projection"),
            )?)
        } else {
            None
        };
        let vb = if vb.contains_tensor("text_model.embeddings.token_embedding.weight") {
            vb.pp("text_model")
        } else {
            vb
        };
        let (h, eps) = (config.hidden_size, config.layer_norm_eps);
        let emb = vb.pp("embeddings");
        let token_embedding = candle_nn::embedding(config.vocab_size, h, emb.pp("token_embedding"))?;
        let position_embedding =
            candle_nn::embedding(config.max_position_embeddings, h, emb.pp("position_embedding"))?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let vb = vb.pp(format!("encoder.layers.{i}"));
                let attn = vb.pp("self_attn");
                Ok(Layer {
                    q: candle_nn::linear(h, h, attn.pp("q_proj"))?,
                    k: candle_nn::linear(h, h, attn.pp("k_proj"))?,
                    v: candle_nn::linear(h, h, attn.pp("v_proj"))?,
                    out: candle_nn::linear(h, h, attn.pp("out_proj"))?,
                    norm1: candle_nn::layer_norm(h, eps, vb.pp("layer_norm1"))?,
                    norm2: candle_nn::layer_norm(h, eps, vb.pp("layer_norm2"))?,
                    fc1: candle_nn::linear(h, config.intermediate_size, vb.pp("mlp.fc1"))?,
                    fc2: candle_nn::linear(config.intermediate_size, h, vb.pp("mlp.fc2"))?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let final_layer_norm = candle_nn::layer_norm(h, eps, vb.pp("final_layer_norm"))?;
        Ok(ClipTextEncoder {
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
            text_projection,
            config: config.clone(),
        })
    }

    /// The model's config, for the sequence length and padding token.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// The pooled output as transformers' `CLIPTextModelWithProjection` gives it (`text_embeds`): the
    /// last hidden state at the end token, through `text_projection` when the model has one. The end
    /// token is the first `eos_token_id`, or the largest id when the config says 2 (transformers'
    /// legacy rule, which SDXL's configs trigger: the real end token has the largest id).
    pub fn pooled(&self, tokens: &Tensor, output: &ClipOutput) -> candle_core::Result<Tensor> {
        let rows = tokens.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let eos = self.config.eos_token_id.filter(|&id| id != 2);
        let positions = rows
            .iter()
            .map(|row| {
                let first_eos = eos.and_then(|eos| row.iter().position(|&id| id == eos));
                // `argmax` takes the first of equal maxima, as torch's does.
                let argmax = row
                    .iter()
                    .enumerate()
                    .fold(0, |best, (i, &id)| if id > row[best] { i } else { best });
                first_eos.unwrap_or(if eos.is_some() { 0 } else { argmax }) as u32
            })
            .collect::<Vec<_>>();
        let index = Tensor::new(positions.as_slice(), tokens.device())?;
        let hidden = &output.last_hidden_state;
        let (batch, _, width) = hidden.dims3()?;
        let pooled = hidden
            .gather(
                &index
                    .reshape((batch, 1, 1))?
                    .broadcast_as((batch, 1, width))?
                    .contiguous()?,
                1,
            )?
            .squeeze(1)?;
        match &self.text_projection {
            Some(projection) => projection.forward(&pooled),
            None => Ok(pooled),
        }
    }

    /// The conditioning SDXL takes from this encoder: the hidden state `clip_skip` layers before the
    /// last, without the final layer norm (diffusers' `hidden_states[-(clip_skip + 2)]`, where the UIs'
    /// clip skip 1 is diffusers' `None`, the penultimate layer).
    pub fn sdxl_states(&self, output: &ClipOutput, clip_skip: usize) -> candle_core::Result<Tensor> {
        let layers = output.hidden_states.len();
        let back = clip_skip.max(1) + 1;
        if back > layers {
            candle_core::bail!("clip skip {clip_skip} is too deep for a {layers}-layer text encoder");
        }
        Ok(output.hidden_states[layers - back].clone())
    }

    /// Encodes a `(batch, seq)` tensor of token ids (u32 or i64).
    pub fn forward(&self, tokens: &Tensor) -> candle_core::Result<ClipOutput> {
        self.forward_with(tokens, None)
    }

    /// [`ClipTextEncoder::forward`] where ids from `extra.first_id` on read `extra`'s rows (textual
    /// inversion) instead of the token embedding.
    pub fn forward_with(
        &self,
        tokens: &Tensor,
        extra: Option<&ExtraTokens>,
    ) -> candle_core::Result<ClipOutput> {
        let (batch, seq) = tokens.dims2()?;
        let device = tokens.device();
        let positions = Tensor::arange(0u32, seq as u32, device)?;
        let tokens = tokens.to_dtype(DType::U32)?;
        let embedded = match extra {
            None => self.token_embedding.forward(&tokens)?,
            Some(extra) => extra.embed(&self.token_embedding, &tokens)?,
        };
        let mut xs = embedded.broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let mask = causal_mask(seq, xs.dtype(), device)?;
        let heads = self.config.num_attention_heads;
        let head_dim = self.config.hidden_size / heads;
        let scale = (head_dim as f64).powf(-0.5);
        let mut hidden_states = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let normed = layer.norm1.forward(&xs)?;
            let split = |t: Tensor| -> candle_core::Result<Tensor> {
                t.reshape((batch, seq, heads, head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = split((linear(&layer.q, &normed, None)? * scale)?)?;
            let k = split(linear(&layer.k, &normed, None)?)?;
            let v = split(linear(&layer.v, &normed, None)?)?;
            let weights = q.matmul(&k.t()?)?.broadcast_add(&mask)?;
            let weights = candle_nn::ops::softmax_last_dim(&weights)?;
            let attn = weights
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((batch, seq, self.config.hidden_size))?;
            xs = linear(&layer.out, &attn, Some(&xs))?;
            let hidden = linear(&layer.fc1, &layer.norm2.forward(&xs)?, None)?;
            let hidden = match self.config.hidden_act.as_str() {
                "gelu" => hidden.gelu_erf()?,
                _ => (&hidden * candle_nn::ops::sigmoid(&(&hidden * 1.702)?)?)?,
            };
            xs = linear(&layer.fc2, &hidden, Some(&xs))?;
            hidden_states.push(xs.clone());
        }
        let last_hidden_state = self.final_layer_norm.forward(&xs)?;
        Ok(ClipOutput {
            hidden_states,
            last_hidden_state,
        })
    }
}

/// Token-embedding rows beyond the vocabulary: ids `first_id..first_id + rows` read `rows`
/// (`(n, hidden)`), as diffusers' `load_textual_inversion` appends them to the embedding matrix.
#[derive(Debug, Clone)]
pub struct ExtraTokens {
    /// The id of the first row.
    pub first_id: u32,
    /// The rows.
    pub rows: Tensor,
}

impl ExtraTokens {
    /// `(batch, seq, hidden)` embeddings of `tokens` (u32): the vocabulary's below `first_id`, the rows'
    /// from it on.
    fn embed(&self, vocabulary: &Embedding, tokens: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, seq) = tokens.dims2()?;
        let count = self.rows.dim(0)? as u32;
        let ids = tokens.flatten_all()?.to_vec1::<u32>()?;
        let (mut base, mut rows, mut pick) = (Vec::new(), Vec::new(), Vec::new());
        for id in ids {
            let row = id.checked_sub(self.first_id).filter(|r| *r < count);
            base.push(if row.is_some() { 0 } else { id });
            rows.push(row.unwrap_or(0));
            pick.push(u8::from(row.is_some()));
        }
        let device = tokens.device();
        let base = vocabulary.forward(&Tensor::from_vec(base, (batch, seq), device)?)?;
        let hidden = base.dim(2)?;
        let rows = self
            .rows
            .to_device(device)?
            .to_dtype(base.dtype())?
            .index_select(&Tensor::from_vec(rows, batch * seq, device)?, 0)?
            .reshape((batch, seq, hidden))?;
        let pick = Tensor::from_vec(pick, (batch, seq, 1), device)?.broadcast_as((batch, seq, hidden))?;
        pick.where_cond(&rows, &base)
    }
}

/// `-inf` above the diagonal: each token sees only those before it.
fn causal_mask(seq: usize, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| (0..seq).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (seq, seq), device)?
        .to_dtype(dtype)?
        .unsqueeze(0)?
        .unsqueeze(0)
}
