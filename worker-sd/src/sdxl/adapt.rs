//! SDXL's LoRAs: the base tensors of both text encoders and the UNet are kept, and a LoRA set's models
//! are built from copies where only the adapted weights are new (see [`crate::lora`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::text::TextEncoders;
use super::unet::{Unet, UnetConfig};
use crate::lora::{ActiveLora, Component, LoraReport, Merged, Target, cast};
use crate::sd::clip::{ClipConfig, ClipTextEncoder};
use crate::sd::single_file::{UnetLayout, unet_ldm_names};
use crate::sd::tokenizer::ClipTokenizer;

/// The models LoRAs change.
pub struct SdxlModels {
    /// Both text encoders and their tokenizers.
    pub text: TextEncoders,
    /// The UNet.
    pub unet: Unet,
}

/// What the models are built from, kept for merging LoRAs without reloading.
pub(super) struct SdxlBase {
    text: [(ClipConfig, HashMap<String, Tensor>); 2],
    unet: (UnetConfig, HashMap<String, Tensor>),
    tokenizers: (Option<PathBuf>, Option<PathBuf>),
    force_zeros_for_empty_prompt: bool,
    /// The UNet's original (LDM) module names, which kohya's SDXL LoRAs use.
    ldm_names: HashMap<String, String>,
    dtype: DType,
    device: Device,
    adapted: Merged<SdxlModels>,
}

type Weights = (ClipConfig, HashMap<String, Tensor>);

impl SdxlBase {
    /// Keeps the tensors (in the model's dtype, so the models share them) and builds the plain models.
    pub(super) fn new(
        text: [Weights; 2],
        unet: (UnetConfig, HashMap<String, Tensor>),
        tokenizers: (Option<PathBuf>, Option<PathBuf>),
        force_zeros_for_empty_prompt: bool,
        dtype: DType,
        device: &Device,
    ) -> crate::Result<(Self, SdxlModels)> {
        let cast = |map| cast(map, dtype, device);
        let [(c1, t1), (c2, t2)] = text;
        let layout = UnetLayout {
            layers_per_block: unet.0.layers_per_block,
            attention: unet
                .0
                .down_block_types
                .iter()
                .map(|t| t.starts_with("CrossAttn"))
                .collect(),
        };
        let unet = (unet.0, cast(unet.1)?);
        let modules = unet.1.keys().filter_map(|k| k.strip_suffix(".weight"));
        let ldm_names = unet_ldm_names(&layout, modules);
        let base = SdxlBase {
            text: [(c1, cast(t1)?), (c2, cast(t2)?)],
            unet,
            tokenizers,
            force_zeros_for_empty_prompt,
            ldm_names,
            dtype,
            device: device.clone(),
            adapted: Merged::default(),
        };
        let models = base.build([&base.text[0].1, &base.text[1].1], &base.unet.1)?;
        Ok((base, models))
    }

    fn build(
        &self,
        text: [&HashMap<String, Tensor>; 2],
        unet: &HashMap<String, Tensor>,
    ) -> crate::Result<SdxlModels> {
        let (dtype, device) = (self.dtype, &self.device);
        let encoder = |i: usize,
                       tokenizer: &Option<PathBuf>|
         -> crate::Result<(ClipTextEncoder, Option<ClipTokenizer>)> {
            let config = &self.text[i].0;
            let encoder =
                ClipTextEncoder::new(VarBuilder::from_tensors(text[i].clone(), dtype, device), config)?;
            let tokenizer = tokenizer
                .as_ref()
                .map(|folder| ClipTokenizer::load(folder, config.max_position_embeddings))
                .transpose()?;
            Ok((encoder, tokenizer))
        };
        Ok(SdxlModels {
            text: TextEncoders {
                first: encoder(0, &self.tokenizers.0)?,
                second: encoder(1, &self.tokenizers.1)?,
                force_zeros_for_empty_prompt: self.force_zeros_for_empty_prompt,
            },
            unet: Unet::new(
                VarBuilder::from_tensors(unet.clone(), dtype, device),
                &self.unet.0,
            )?,
        })
    }

    /// Both text encoders and the UNet (with its original module names), as LoRAs see them.
    pub(super) fn lora_targets(&self) -> [Target<'_>; 3] {
        let none = crate::lora::no_aliases();
        [
            Target {
                component: Component::Text(0),
                tensors: &self.text[0].1,
                aliases: none,
                slices: crate::lora::no_slices(),
            },
            Target {
                component: Component::Text(1),
                tensors: &self.text[1].1,
                aliases: none,
                slices: crate::lora::no_slices(),
            },
            Target {
                component: Component::Denoiser,
                tensors: &self.unet.1,
                aliases: &self.ldm_names,
                slices: crate::lora::no_slices(),
            },
        ]
    }

    /// The models with `loras` merged (`plain` when there are none), and what each applied.
    pub(super) fn models_for(
        &self,
        plain: &Arc<SdxlModels>,
        loras: &[ActiveLora],
    ) -> crate::Result<(Arc<SdxlModels>, Vec<LoraReport>)> {
        self.adapted
            .models_for(plain, &self.lora_targets(), loras, |maps| {
                self.build([&maps[0], &maps[1]], &maps[2])
            })
    }
}
