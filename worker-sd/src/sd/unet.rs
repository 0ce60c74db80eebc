//! The UNet of SD 1.x/2.x from a diffusers `unet/config.json`, built with candle-transformers'
//! `UNet2DConditionModel`.

use crate::layers::unet_2d::{BlockConfig, UNet2DConditionModelConfig};
use serde::Deserialize;

/// A diffusers field that is one value for every block or one per block.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    /// The same for every block.
    One(usize),
    /// One value per down block.
    Each(Vec<usize>),
}

impl PerBlock {
    fn get(&self, block: usize) -> usize {
        match self {
            PerBlock::One(v) => *v,
            PerBlock::Each(v) => v.get(block).or(v.last()).copied().unwrap_or(1),
        }
    }
}

/// The fields of diffusers' `UNet2DConditionModel` config that shape SD 1.x/2.x UNets.
#[derive(Debug, Clone, Deserialize)]
pub struct UnetConfig {
    /// 4, or 9 for inpainting UNets (latents, mask, masked-image latents).
    #[serde(default = "four")]
    pub in_channels: usize,
    /// Latent channels out.
    #[serde(default = "four")]
    pub out_channels: usize,
    /// Channels of each resolution level.
    pub block_out_channels: Vec<usize>,
    /// `CrossAttnDownBlock2D` or `DownBlock2D` per level.
    pub down_block_types: Vec<String>,
    /// Resnets per down block.
    #[serde(default = "two")]
    pub layers_per_block: usize,
    /// Attention heads per block (diffusers' historical misnomer; `num_attention_heads` wins when set).
    #[serde(default = "eight")]
    pub attention_head_dim: PerBlock,
    /// Attention heads per block, in newer configs.
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock>,
    /// Transformer layers in each cross-attention block.
    #[serde(default)]
    pub transformer_layers_per_block: Option<PerBlock>,
    /// Width of the text conditioning.
    pub cross_attention_dim: usize,
    /// GroupNorm groups.
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    /// GroupNorm epsilon.
    #[serde(default = "norm_eps")]
    pub norm_eps: f64,
    /// SD 2.x projects attention inputs with linear layers instead of 1x1 convolutions.
    #[serde(default)]
    pub use_linear_projection: bool,
    /// Timestep embedding layout.
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    /// Timestep embedding frequency shift.
    #[serde(default)]
    pub freq_shift: f64,
    /// Whether inputs are mapped from [0, 1] to [-1, 1].
    #[serde(default)]
    pub center_input_sample: bool,
    /// Padding of the downsampling convolutions.
    #[serde(default = "one")]
    pub downsample_padding: usize,
    /// Mid block output scale.
    #[serde(default = "one_f")]
    pub mid_block_scale_factor: f64,
}

fn four() -> usize {
    4
}
fn two() -> usize {
    2
}
fn one() -> usize {
    1
}
fn one_f() -> f64 {
    1.0
}
fn eight() -> PerBlock {
    PerBlock::One(8)
}
fn thirty_two() -> usize {
    32
}
fn norm_eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

impl UnetConfig {
    /// Stable Diffusion 1.5's UNet, for single-file checkpoints that carry no config.
    pub fn sd15() -> Self {
        serde_json::from_str(SD15_UNET).expect("built-in config parses")
    }

    /// Stable Diffusion 2.1's UNet (same for 512 and 768 v-prediction).
    pub fn sd21() -> Self {
        serde_json::from_str(SD21_UNET).expect("built-in config parses")
    }

    /// candle's config of the same UNet.
    pub fn to_candle(&self) -> UNet2DConditionModelConfig {
        let heads = self
            .num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim);
        let blocks = self
            .block_out_channels
            .iter()
            .enumerate()
            .map(|(i, &out_channels)| BlockConfig {
                out_channels,
                use_cross_attn: self
                    .down_block_types
                    .get(i)
                    .is_some_and(|t| t.starts_with("CrossAttn"))
                    .then(|| {
                        self.transformer_layers_per_block
                            .as_ref()
                            .map_or(1, |layers| layers.get(i))
                    }),
                attention_head_dim: heads.get(i),
            })
            .collect();
        UNet2DConditionModelConfig {
            center_input_sample: self.center_input_sample,
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
            blocks,
            layers_per_block: self.layers_per_block,
            downsample_padding: self.downsample_padding,
            mid_block_scale_factor: self.mid_block_scale_factor,
            norm_num_groups: self.norm_num_groups,
            norm_eps: self.norm_eps,
            cross_attention_dim: self.cross_attention_dim,
            sliced_attention_size: None,
            use_linear_projection: self.use_linear_projection,
        }
    }
}

const SD15_UNET: &str = r#"{
  "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
}"#;

const SD21_UNET: &str = r#"{
  "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "attention_head_dim": [5, 10, 20, 20],
  "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 1024, "use_linear_projection": true,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
}"#;
