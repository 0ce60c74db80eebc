//! The SDXL UNet: candle-transformers' `UNet2DConditionModel` (its `unet_2d.rs`, MIT/Apache-2.0) with the
//! `text_time` added conditioning it lacks.
//!
//! SDXL adds to the timestep embedding an embedding of the second text encoder's pooled, projected output
//! and of six "time ids" (original size, crop top-left, target size), each id sinusoidally embedded. candle's
//! model has no place for it (it ignores `add_embedding.*`), so its outputs differ from diffusers'; this is
//! the same model built from the same blocks (worker-sd's copies, [`crate::layers`]), with that term added.

use super::{Result, SdxlError};
use crate::layers::blocks::{UNetMidBlock2DCrossAttn, UNetMidBlock2DCrossAttnConfig};
use crate::layers::unet_blocks::{
    CrossAttnDownBlock2D, CrossAttnDownBlock2DConfig, CrossAttnUpBlock2D, CrossAttnUpBlock2DConfig,
    DownBlock2D, DownBlock2DConfig, UpBlock2D, UpBlock2DConfig,
};
use crate::layers::{Conv2d, GroupNorm, conv2d, group_norm};
use candle_core::{Module, Tensor};
use candle_nn as nn;
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};
use serde::Deserialize;

/// The fields of diffusers' `unet/config.json` an SDXL-shaped UNet is built from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UnetConfig {
    /// Latent channels in (4; 9 for inpainting).
    pub in_channels: usize,
    /// Latent channels out.
    pub out_channels: usize,
    /// Channels of each resolution level.
    pub block_out_channels: Vec<usize>,
    /// Which levels attend to the text: `CrossAttnDownBlock2D` or `DownBlock2D`.
    pub down_block_types: Vec<String>,
    /// ResNet layers per level on the way down (one more on the way up).
    pub layers_per_block: usize,
    /// Heads per level (diffusers' historical name; SDXL: 5, 10, 20).
    pub attention_head_dim: OneOrMany,
    /// Transformer blocks per attending level (SDXL: 1, 2, 10).
    #[serde(default = "one_layer")]
    pub transformer_layers_per_block: OneOrMany,
    /// Width of the text states (2048 for SDXL: both encoders concatenated).
    pub cross_attention_dim: usize,
    /// Whether attention projections in and out are linear (SDXL) or 1×1 convolutions (SD 1.x).
    #[serde(default)]
    pub use_linear_projection: bool,
    /// GroupNorm groups.
    #[serde(default = "groups")]
    pub norm_num_groups: usize,
    /// GroupNorm epsilon.
    #[serde(default = "eps")]
    pub norm_eps: f64,
    /// Whether sinusoidal embeddings put cosines first (true for SD).
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    /// The sinusoidal embedding's frequency shift.
    #[serde(default)]
    pub freq_shift: f64,
    /// `text_time` for SDXL; `None` for SD 1.x/2.x, which this model also runs.
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    /// Width of each time id's sinusoidal embedding (256 for SDXL).
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    /// Pooled text width plus six time-id embeddings (2816 for SDXL).
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
}

impl UnetConfig {
    /// SDXL base's UNet (`stabilityai/stable-diffusion-xl-base-1.0/unet/config.json`), for single-file
    /// checkpoints that carry no config.
    pub fn sdxl() -> Self {
        serde_json::from_str(SDXL_UNET).expect("built-in config parses")
    }
}

const SDXL_UNET: &str = r#"{
  "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "attention_head_dim": [5, 10, 20],
  "block_out_channels": [320, 640, 1280], "transformer_layers_per_block": [1, 2, 10],
  "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
  "cross_attention_dim": 2048, "use_linear_projection": true, "addition_embed_type": "text_time",
  "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816
}"#;

/// A per-level value diffusers writes either once or per level.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// The same for every level.
    One(usize),
    /// One per level.
    Many(Vec<usize>),
}

impl OneOrMany {
    fn at(&self, level: usize) -> usize {
        match self {
            OneOrMany::One(v) => *v,
            OneOrMany::Many(v) => v.get(level).or(v.last()).copied().unwrap_or(1),
        }
    }
}

fn one_layer() -> OneOrMany {
    OneOrMany::One(1)
}
fn groups() -> usize {
    32
}
fn eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

enum DownBlock {
    Basic(DownBlock2D),
    CrossAttn(CrossAttnDownBlock2D),
}

enum UpBlock {
    Basic(UpBlock2D),
    CrossAttn(CrossAttnUpBlock2D),
}

/// The `text_time` conditioning: time-id projection and the MLP over `[text_embeds, time embeds]`.
struct AddedEmbedding {
    time_proj: Timesteps,
    embedding: TimestepEmbedding,
}

/// SDXL's conditioning beyond the text states, per batch item.
pub struct AddedCond<'a> {
    /// The second text encoder's projected pooled output, (b, d).
    pub text_embeds: &'a Tensor,
    /// (b, 6): original height and width, crop top and left, target height and width.
    pub time_ids: &'a Tensor,
}

/// A UNet built from a diffusers config, with SDXL's added conditioning when the config asks for it.
pub struct Unet {
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    add: Option<AddedEmbedding>,
    down_blocks: Vec<DownBlock>,
    mid_block: UNetMidBlock2DCrossAttn,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Unet {
    /// Builds the UNet from diffusers' weight names and config.
    pub fn new(vs: nn::VarBuilder, config: &UnetConfig) -> Result<Self> {
        let c = config;
        let levels = c.block_out_channels.len();
        if levels == 0 || c.down_block_types.len() != levels {
            return Err(SdxlError::Config(
                "block_out_channels and down_block_types must name the same levels".into(),
            ));
        }
        let cross = |level: usize| -> Option<usize> {
            c.down_block_types[level]
                .starts_with("CrossAttn")
                .then(|| c.transformer_layers_per_block.at(level))
        };
        let b_channels = c.block_out_channels[0];
        let last_channels = c.block_out_channels[levels - 1];
        let time_embed_dim = b_channels * 4;
        let conv_cfg = nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv_in = conv2d(c.in_channels, b_channels, 3, conv_cfg, vs.pp("conv_in"))?;
        let time_proj = Timesteps::new(b_channels, c.flip_sin_to_cos, c.freq_shift);
        let time_embedding = TimestepEmbedding::new(vs.pp("time_embedding"), b_channels, time_embed_dim)?;
        let add = match c.addition_embed_type.as_deref() {
            None => None,
            Some("text_time") => {
                let (Some(dim), Some(input)) =
                    (c.addition_time_embed_dim, c.projection_class_embeddings_input_dim)
                else {
                    return Err(SdxlError::Config(
                        "text_time needs addition_time_embed_dim and projection_class_embeddings_input_dim"
                            .into(),
                    ));
                };
                Some(AddedEmbedding {
                    time_proj: Timesteps::new(dim, c.flip_sin_to_cos, c.freq_shift),
                    embedding: TimestepEmbedding::new(vs.pp("add_embedding"), input, time_embed_dim)?,
                })
            }
            Some(other) => {
                return Err(SdxlError::Config(format!(
                    "addition_embed_type {other:?} is not supported"
                )));
            }
        };

        let vs_db = vs.pp("down_blocks");
        let mut down_blocks = Vec::with_capacity(levels);
        for i in 0..levels {
            let in_channels = if i > 0 {
                c.block_out_channels[i - 1]
            } else {
                b_channels
            };
            let out_channels = c.block_out_channels[i];
            let db_cfg = DownBlock2DConfig {
                num_layers: c.layers_per_block,
                resnet_eps: c.norm_eps,
                resnet_groups: c.norm_num_groups,
                add_downsample: i < levels - 1,
                downsample_padding: 1,
                ..Default::default()
            };
            let block = match cross(i) {
                Some(transformer_layers_per_block) => DownBlock::CrossAttn(CrossAttnDownBlock2D::new(
                    vs_db.pp(i.to_string()),
                    in_channels,
                    out_channels,
                    Some(time_embed_dim),
                    false,
                    CrossAttnDownBlock2DConfig {
                        downblock: db_cfg,
                        attn_num_head_channels: c.attention_head_dim.at(i),
                        cross_attention_dim: c.cross_attention_dim,
                        sliced_attention_size: None,
                        use_linear_projection: c.use_linear_projection,
                        transformer_layers_per_block,
                    },
                )?),
                None => DownBlock::Basic(DownBlock2D::new(
                    vs_db.pp(i.to_string()),
                    in_channels,
                    out_channels,
                    Some(time_embed_dim),
                    db_cfg,
                )?),
            };
            down_blocks.push(block);
        }

        let mid_block = UNetMidBlock2DCrossAttn::new(
            vs.pp("mid_block"),
            last_channels,
            Some(time_embed_dim),
            false,
            UNetMidBlock2DCrossAttnConfig {
                resnet_eps: c.norm_eps,
                output_scale_factor: 1.0,
                cross_attn_dim: c.cross_attention_dim,
                attn_num_head_channels: c.attention_head_dim.at(levels - 1),
                resnet_groups: Some(c.norm_num_groups),
                use_linear_projection: c.use_linear_projection,
                transformer_layers_per_block: c.transformer_layers_per_block.at(levels - 1),
                ..Default::default()
            },
        )?;

        let vs_ub = vs.pp("up_blocks");
        let mut up_blocks = Vec::with_capacity(levels);
        for i in 0..levels {
            let level = levels - 1 - i;
            let out_channels = c.block_out_channels[level];
            let prev_out_channels = if i > 0 {
                c.block_out_channels[levels - i]
            } else {
                last_channels
            };
            let in_channels = c.block_out_channels[if i == levels - 1 { 0 } else { levels - i - 2 }];
            let ub_cfg = UpBlock2DConfig {
                num_layers: c.layers_per_block + 1,
                resnet_eps: c.norm_eps,
                resnet_groups: c.norm_num_groups,
                add_upsample: i < levels - 1,
                ..Default::default()
            };
            let block = match cross(level) {
                Some(transformer_layers_per_block) => UpBlock::CrossAttn(CrossAttnUpBlock2D::new(
                    vs_ub.pp(i.to_string()),
                    in_channels,
                    prev_out_channels,
                    out_channels,
                    Some(time_embed_dim),
                    false,
                    CrossAttnUpBlock2DConfig {
                        upblock: ub_cfg,
                        attn_num_head_channels: c.attention_head_dim.at(level),
                        cross_attention_dim: c.cross_attention_dim,
                        sliced_attention_size: None,
                        use_linear_projection: c.use_linear_projection,
                        transformer_layers_per_block,
                    },
                )?),
                None => UpBlock::Basic(UpBlock2D::new(
                    vs_ub.pp(i.to_string()),
                    in_channels,
                    prev_out_channels,
                    out_channels,
                    Some(time_embed_dim),
                    ub_cfg,
                )?),
            };
            up_blocks.push(block);
        }

        let conv_norm_out = group_norm(c.norm_num_groups, b_channels, c.norm_eps, vs.pp("conv_norm_out"))?;
        let conv_out = conv2d(b_channels, c.out_channels, 3, conv_cfg, vs.pp("conv_out"))?;
        Ok(Unet {
            conv_in,
            time_proj,
            time_embedding,
            add,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
        })
    }

    /// Whether [`forward`](Self::forward) needs [`AddedCond`] (SDXL) or not (SD 1.x/2.x).
    pub fn needs_added_cond(&self) -> bool {
        self.add.is_some()
    }

    /// The model output (noise or velocity) for latents `xs` (b, c, h, w) at `timestep`, attending to
    /// text states `context` (b, n, d), with SDXL's added conditioning when the model has it.
    pub fn forward(
        &self,
        xs: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<&AddedCond>,
    ) -> Result<Tensor> {
        let (batch, _, height, width) = xs.dims4()?;
        let levels = self.down_blocks.len();
        let up_factor = 1usize << (levels - 1);
        let forward_upsample_size = height % up_factor != 0 || width % up_factor != 0;

        let emb = (Tensor::ones(batch, xs.dtype(), xs.device())? * timestep)?;
        let mut emb = self.time_embedding.forward(&self.time_proj.forward(&emb)?)?;
        match (&self.add, added) {
            (Some(add), Some(cond)) => {
                // diffusers' `get_aug_embed` for `text_time`.
                let time_embeds = add
                    .time_proj
                    .forward(&cond.time_ids.flatten_all()?)?
                    .reshape((cond.text_embeds.dim(0)?, ()))?;
                let add_embeds = Tensor::cat(
                    &[cond.text_embeds, &time_embeds.to_dtype(cond.text_embeds.dtype())?],
                    1,
                )?;
                emb = (emb + add.embedding.forward(&add_embeds.to_dtype(xs.dtype())?)?)?;
            }
            (Some(_), None) => {
                return Err(SdxlError::Config(
                    "this UNet needs text_embeds and time_ids (SDXL added conditioning)".into(),
                ));
            }
            (None, _) => {}
        }

        let xs = self.conv_in.forward(xs)?;
        let mut res = vec![xs.clone()];
        let mut xs = xs;
        for block in &self.down_blocks {
            let (next, block_res) = match block {
                DownBlock::Basic(b) => b.forward(&xs, Some(&emb))?,
                DownBlock::CrossAttn(b) => b.forward(&xs, Some(&emb), Some(context))?,
            };
            res.extend(block_res);
            xs = next;
        }
        let mut xs = self.mid_block.forward(&xs, Some(&emb), Some(context))?;
        let mut upsample_size = None;
        for (i, block) in self.up_blocks.iter().enumerate() {
            let n_resnets = match block {
                UpBlock::Basic(b) => b.resnets.len(),
                UpBlock::CrossAttn(b) => b.upblock.resnets.len(),
            };
            let block_res = res.split_off(res.len() - n_resnets);
            if i < levels - 1 && forward_upsample_size {
                let (_, _, h, w) = res[res.len() - 1].dims4()?;
                upsample_size = Some((h, w));
            }
            xs = match block {
                UpBlock::Basic(b) => b.forward(&xs, &block_res, Some(&emb), upsample_size)?,
                UpBlock::CrossAttn(b) => {
                    b.forward(&xs, &block_res, Some(&emb), upsample_size, Some(context))?
                }
            };
        }
        let xs = self.conv_norm_out.forward_silu(&xs)?;
        Ok(self.conv_out.forward(&xs)?)
    }
}
