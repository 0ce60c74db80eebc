//! Safetensors headers: reading the tensor table from a byte prefix, and recognising what the weights are
//! (which Stable Diffusion generation, Flux dev or schnell, an LLM family) from tensor names and shapes.
//!
//! The header is a little-endian `u64` length followed by that much JSON, so `serde_json` reads it; the
//! `safetensors` crate's reader wants the whole buffer including the data, which a Range read does not have.

use std::collections::BTreeMap;

use artifacts_contract::{
    CheckpointType, Distillation, ImageBase, ImageConfig, ImageVariant, LlmConfig, ModelFamily, TypedConfig,
    WeightFormat,
};
use serde::Deserialize;

/// The safetensors crate's own limit on the header size.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Why a byte prefix could not be read as a safetensors header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SafetensorsError {
    /// The prefix ends before the header does; read `needed` bytes from the start and retry.
    #[error("the safetensors header is truncated: {needed} bytes are needed, {have} were given")]
    Truncated {
        /// Bytes from the start of the file that hold the whole header.
        needed: u64,
        /// Bytes given.
        have: u64,
    },
    /// A header length no real file has.
    #[error("the safetensors header claims {0} bytes of metadata; refusing to read a header that large")]
    Absurd(u64),
    /// The header is not the expected JSON object.
    #[error("the safetensors header is not valid: {0}")]
    Json(String),
}

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TensorInfo {
    /// Element type (`F16`, `BF16`, `F32`, `I64`...).
    pub dtype: String,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Byte range in the data section.
    pub data_offsets: [u64; 2],
}

/// The parsed header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SafetensorsHeader {
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorInfo>,
    /// The free-form `__metadata__` strings (training tools put the base model here).
    pub metadata: BTreeMap<String, String>,
}

/// Bytes that hold the header, from the first 8 bytes of the file: what to Range-read.
pub fn header_len(prefix: &[u8]) -> Result<u64, SafetensorsError> {
    let Some(len) = prefix.get(..8) else {
        return Err(SafetensorsError::Truncated {
            needed: 8,
            have: prefix.len() as u64,
        });
    };
    let n = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    if n > MAX_HEADER_BYTES {
        return Err(SafetensorsError::Absurd(n));
    }
    Ok(8 + n)
}

/// Parses the header from a prefix of a safetensors file (the whole file works too).
pub fn parse_header(bytes: &[u8]) -> Result<SafetensorsHeader, SafetensorsError> {
    let needed = header_len(bytes)?;
    if (bytes.len() as u64) < needed {
        return Err(SafetensorsError::Truncated {
            needed,
            have: bytes.len() as u64,
        });
    }
    let raw: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&bytes[8..needed as usize])
        .map_err(|e| SafetensorsError::Json(e.to_string()))?;
    let mut header = SafetensorsHeader::default();
    for (name, value) in raw {
        if name == "__metadata__" {
            header.metadata = serde_json::from_value(value)
                .map_err(|e| SafetensorsError::Json(format!("__metadata__: {e}")))?;
        } else {
            let info: TensorInfo =
                serde_json::from_value(value).map_err(|e| SafetensorsError::Json(format!("{name}: {e}")))?;
            header.tensors.insert(name, info);
        }
    }
    Ok(header)
}

impl SafetensorsHeader {
    fn shape_of(&self, suffix: &str) -> Option<&[u64]> {
        self.tensors
            .iter()
            .find(|(k, _)| k.ends_with(suffix))
            .map(|(_, t)| t.shape.as_slice())
    }

    fn has(&self, part: &str) -> bool {
        self.tensors.keys().any(|k| k.contains(part))
    }

    /// Total number of elements: the parameter count.
    pub fn parameter_count(&self) -> u64 {
        self.tensors
            .values()
            .map(|t| t.shape.iter().product::<u64>())
            .sum()
    }

    /// The dtype most parameters are stored in (`BF16`, `F16`...).
    pub fn main_dtype(&self) -> Option<String> {
        let mut by_dtype: BTreeMap<&str, u64> = BTreeMap::new();
        for t in self.tensors.values() {
            *by_dtype.entry(&t.dtype).or_default() += t.shape.iter().product::<u64>();
        }
        by_dtype
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(d, _)| d.to_string())
    }

    /// Recognises the weights; `config_json` is a `config.json` found beside them, which names an LLM's
    /// architecture better than layer names do. `None` when nothing matches.
    pub fn recognize(&self, config_json: Option<&serde_json::Value>) -> Option<TypedConfig> {
        if let Some(image) = self.recognize_image() {
            return Some(TypedConfig::Image(image));
        }
        self.recognize_llm(config_json).map(TypedConfig::Llm)
    }

    fn recognize_image(&self) -> Option<ImageConfig> {
        if self.has("lora_unet") || self.has("lora_te") || self.has(".lora_down.") || self.has(".lora_A.") {
            let base = self
                .metadata
                .get("ss_base_model_version")
                .map(|v| lora_base(v))
                .unwrap_or(if self.has("double_blocks") {
                    ImageBase::Flux
                } else {
                    ImageBase::Other
                });
            let mut c = ImageConfig::new(base);
            c.checkpoint_type = CheckpointType::Lora;
            return Some(c);
        }
        // Flux: original single-file keys (`double_blocks`) or diffusers' (`single_transformer_blocks`).
        if self.has("double_blocks.") || self.has("single_transformer_blocks.") {
            let mut c = ImageConfig::new(ImageBase::Flux);
            let guidance = self.has("guidance_in.") || self.has("guidance_embedder.");
            c.distillation = (!guidance).then_some(Distillation::Schnell);
            c.base_model = Some(if guidance { "Flux.1 D" } else { "Flux.1 S" }.into());
            return Some(c);
        }
        // A UNet: its cross-attention key projection is (inner, context width), and the context width
        // names the text encoder, hence the generation.
        let unet = self.has("model.diffusion_model.") || self.has("down_blocks.");
        if !unet {
            if self.has("encoder.down") && self.has("decoder.up") {
                let mut c = ImageConfig::new(ImageBase::Other);
                c.checkpoint_type = CheckpointType::Vae;
                return Some(c);
            }
            return None;
        }
        let (base, refiner) = self.unet_generation()?;
        let mut c = ImageConfig::new(base);
        let in_channels = self
            .tensors
            .get("model.diffusion_model.input_blocks.0.0.weight")
            .or_else(|| self.tensors.get("conv_in.weight"))
            .and_then(|t| t.shape.get(1).copied());
        c.variant = if refiner {
            ImageVariant::Refiner
        } else if in_channels == Some(9) {
            ImageVariant::Inpaint
        } else {
            ImageVariant::Normal
        };
        Some(c)
    }

    /// Which generation a UNet checkpoint is, and whether it is an SDXL refiner.
    ///
    /// As InvokeAI's probe does, the text encoders bundled in a single file decide first (their key
    /// prefixes differ per generation whatever the model's size, so tiny test models read right too);
    /// the UNet's own layout next (SDXL's `label_emb`/`add_embedding` for its size and crop ids); the
    /// cross-attention width (the text encoder's width) last, for a UNet saved alone.
    fn unet_generation(&self) -> Option<(ImageBase, bool)> {
        let context = self.shape_of("attn2.to_k.weight").and_then(|s| s.get(1)).copied();
        if self.has("conditioner.embedders.1.") {
            return Some((ImageBase::Sdxl, false));
        }
        if self.has("conditioner.embedders.0.model.") {
            // The refiner conditions on OpenCLIP bigG alone.
            return Some((ImageBase::Sdxl, true));
        }
        if self.has("cond_stage_model.model.") {
            return Some((ImageBase::Sd2, false));
        }
        if self.has("cond_stage_model.transformer.") {
            return Some((ImageBase::Sd1, false));
        }
        if self.has("diffusion_model.label_emb.") || self.has("add_embedding.linear_1.") {
            return Some((ImageBase::Sdxl, context == Some(1280)));
        }
        Some(match context? {
            768 => (ImageBase::Sd1, false),
            1024 => (ImageBase::Sd2, false),
            2048 => (ImageBase::Sdxl, false),
            1280 => (ImageBase::Sdxl, true),
            _ => (ImageBase::Other, false),
        })
    }

    fn recognize_llm(&self, config_json: Option<&serde_json::Value>) -> Option<LlmConfig> {
        let looks_llm = self.has("layers.0.") && (self.has("embed_tokens") || self.has("lm_head"));
        if !looks_llm && config_json.is_none() {
            return None;
        }
        let mut c = match config_json {
            Some(cfg) => super::hf_files::llm_config_from_config_json(cfg, WeightFormat::Safetensors),
            None => {
                let family = if self.has("self_attn.qkv_proj") {
                    ModelFamily::Phi3
                } else if self.has("self_attn.dense") {
                    ModelFamily::Phi
                } else if self.has("self_attn.q_norm") {
                    ModelFamily::Qwen3
                } else if self.has("self_attn.q_proj.bias") {
                    ModelFamily::Qwen2
                } else if self.has("block_sparse_moe") {
                    ModelFamily::Mixtral
                } else if self.has("self_attn.q_proj") && self.has("mlp.gate_proj") {
                    ModelFamily::Llama
                } else {
                    ModelFamily::Other
                };
                let mut c = LlmConfig::new(family, WeightFormat::Safetensors);
                c.num_layers = u32::try_from(
                    self.tensors
                        .keys()
                        .filter_map(|k| k.split("layers.").nth(1)?.split('.').next()?.parse::<u64>().ok())
                        .max()
                        .map_or(0, |m| m + 1),
                )
                .ok()
                .filter(|n| *n > 0);
                if let Some(shape) = self.shape_of("embed_tokens.weight") {
                    c.vocab_size = shape.first().and_then(|v| u32::try_from(*v).ok());
                    c.hidden_size = shape.get(1).and_then(|v| u32::try_from(*v).ok());
                }
                c
            }
        };
        c.parameter_count = Some(self.parameter_count());
        c.quantization = c.quantization.or_else(|| self.main_dtype());
        Some(c)
    }
}

/// The base of a kohya-trained LoRA from its `ss_base_model_version` (`sdxl_base_v1-0`, `sd_v1`, `flux1`).
fn lora_base(version: &str) -> ImageBase {
    let v = version.to_ascii_lowercase();
    if v.starts_with("sdxl") {
        ImageBase::Sdxl
    } else if v.starts_with("sd_v1") || v.starts_with("sd_1") {
        ImageBase::Sd1
    } else if v.starts_with("sd_v2") || v.starts_with("sd_2") {
        ImageBase::Sd2
    } else if v.starts_with("flux") {
        ImageBase::Flux
    } else {
        ImageBase::Other
    }
}

/// Builds safetensors bytes holding only a header (and zeroed data), for tests and fixtures.
pub fn write_header(tensors: &[(&str, &str, &[u64])], metadata: &[(&str, &str)]) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    if !metadata.is_empty() {
        let meta: serde_json::Map<String, serde_json::Value> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        map.insert("__metadata__".into(), meta.into());
    }
    let mut offset = 0u64;
    for (name, dtype, shape) in tensors {
        let size = shape.iter().product::<u64>() * if *dtype == "F32" { 4 } else { 2 };
        map.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}),
        );
        offset += size;
    }
    let json = serde_json::to_vec(&map).expect("a map serializes");
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unet(context: u64, in_ch: u64) -> SafetensorsHeader {
        parse_header(&write_header(
            &[
                (
                    "model.diffusion_model.input_blocks.0.0.weight",
                    "F16",
                    &[320, in_ch, 3, 3],
                ),
                (
                    "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
                    "F16",
                    &[640, context],
                ),
            ],
            &[],
        ))
        .unwrap()
    }

    fn image(h: &SafetensorsHeader) -> ImageConfig {
        match h.recognize(None) {
            Some(TypedConfig::Image(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cross_attention_width_names_the_generation() {
        assert_eq!(image(&unet(768, 4)).base, ImageBase::Sd1);
        assert_eq!(image(&unet(1024, 4)).base, ImageBase::Sd2);
        assert_eq!(image(&unet(2048, 4)).base, ImageBase::Sdxl);
        let refiner = image(&unet(1280, 4));
        assert_eq!(
            (refiner.base, refiner.variant),
            (ImageBase::Sdxl, ImageVariant::Refiner)
        );
        assert_eq!(image(&unet(768, 9)).variant, ImageVariant::Inpaint);
    }

    #[test]
    fn bundled_text_encoders_name_the_generation_whatever_the_width() {
        let single_file = |extra: &[&str]| {
            let mut tensors: Vec<(&str, &str, &[u64])> = vec![
                (
                    "model.diffusion_model.input_blocks.0.0.weight",
                    "F16",
                    &[32, 4, 3, 3],
                ),
                (
                    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
                    "F16",
                    &[32, 16],
                ),
            ];
            tensors.extend(extra.iter().map(|k| (*k, "F16", &[4u64][..])));
            image(&parse_header(&write_header(&tensors, &[])).unwrap())
        };
        let sd1 = single_file(&["cond_stage_model.transformer.text_model.final_layer_norm.weight"]);
        assert_eq!((sd1.base, sd1.variant), (ImageBase::Sd1, ImageVariant::Normal));
        let sd2 = single_file(&["cond_stage_model.model.ln_final.weight"]);
        assert_eq!(sd2.base, ImageBase::Sd2);
        let sdxl = single_file(&[
            "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
            "conditioner.embedders.1.model.ln_final.weight",
            "model.diffusion_model.label_emb.0.0.weight",
        ]);
        assert_eq!((sdxl.base, sdxl.variant), (ImageBase::Sdxl, ImageVariant::Normal));
        let refiner = single_file(&["conditioner.embedders.0.model.ln_final.weight"]);
        assert_eq!(
            (refiner.base, refiner.variant),
            (ImageBase::Sdxl, ImageVariant::Refiner)
        );
        let unet_alone = single_file(&["model.diffusion_model.label_emb.0.0.weight"]);
        assert_eq!(unet_alone.base, ImageBase::Sdxl);
        assert_eq!(
            single_file(&[]).base,
            ImageBase::Other,
            "a bare tiny UNet says nothing"
        );
    }

    #[test]
    fn flux_dev_has_a_guidance_layer_and_schnell_has_none() {
        let dev = parse_header(&write_header(
            &[
                ("double_blocks.0.img_attn.qkv.weight", "BF16", &[9216, 3072]),
                ("guidance_in.in_layer.weight", "BF16", &[3072, 256]),
            ],
            &[],
        ))
        .unwrap();
        let schnell = parse_header(&write_header(
            &[("double_blocks.0.img_attn.qkv.weight", "BF16", &[9216, 3072])],
            &[],
        ))
        .unwrap();
        assert_eq!(
            (image(&dev).base, image(&dev).distillation),
            (ImageBase::Flux, None)
        );
        assert_eq!(image(&schnell).distillation, Some(Distillation::Schnell));
    }

    #[test]
    fn llm_layer_names_give_a_family_without_config() {
        let h = parse_header(&write_header(
            &[
                ("model.embed_tokens.weight", "BF16", &[32000, 64]),
                ("model.layers.0.self_attn.q_proj.weight", "BF16", &[64, 64]),
                ("model.layers.1.mlp.gate_proj.weight", "BF16", &[128, 64]),
            ],
            &[],
        ))
        .unwrap();
        let Some(TypedConfig::Llm(c)) = h.recognize(None) else {
            panic!()
        };
        assert_eq!(c.model_family, ModelFamily::Llama);
        assert_eq!(
            (c.num_layers, c.vocab_size, c.hidden_size),
            (Some(2), Some(32000), Some(64))
        );
        assert_eq!(c.quantization.as_deref(), Some("BF16"));
    }

    #[test]
    fn truncated_and_absurd_headers_are_refused() {
        let bytes = write_header(&[("a", "F16", &[1])], &[]);
        let err = parse_header(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(matches!(err, SafetensorsError::Truncated { needed, .. } if needed == bytes.len() as u64));
        let huge = (5u64 << 30).to_le_bytes();
        assert_eq!(
            parse_header(&huge).unwrap_err(),
            SafetensorsError::Absurd(5 << 30)
        );
        let mut bad = 4u64.to_le_bytes().to_vec();
        bad.extend_from_slice(b"[1]x");
        assert!(matches!(parse_header(&bad), Err(SafetensorsError::Json(_))));
    }
}
