//! SDXL's prompt encoding as diffusers' `StableDiffusionXLPipeline.encode_prompt` does it: each prompt
//! through both tokenizers and both CLIP encoders, their penultimate hidden states (no final layer norm)
//! side by side, and the second encoder's projected pooled output.

use std::path::Path;

use candle_core::{D, Device, Tensor};

use super::pipeline::SdxlPrompt;
use crate::embeddings::ActiveEmbedding;
use crate::error::{Result, SdError};
use crate::sd::clip::{ClipTextEncoder, ExtraTokens};
use crate::sd::tokenizer::ClipTokenizer;

/// Both text encoders and their tokenizers.
pub struct TextEncoders {
    /// CLIP ViT-L and its tokenizer (`tokenizer/`), when the model has one.
    pub first: (ClipTextEncoder, Option<ClipTokenizer>),
    /// OpenCLIP bigG and its tokenizer (`tokenizer_2/`, padding with its own pad token, "!" in SDXL).
    pub second: (ClipTextEncoder, Option<ClipTokenizer>),
    /// An empty negative prompt is zeros rather than the encoded "" (`force_zeros_for_empty_prompt` in
    /// `model_index.json`, true for SDXL).
    pub force_zeros_for_empty_prompt: bool,
}

impl TextEncoders {
    /// The deepest clip skip both encoders allow (the UIs' count: 1 is SDXL's usual penultimate layer).
    pub fn max_clip_skip(&self) -> u32 {
        let layers = |e: &ClipTextEncoder| e.config().num_hidden_layers;
        (layers(&self.first.0)
            .min(layers(&self.second.0))
            .saturating_sub(1))
        .max(1) as u32
    }

    /// The two token rows of a prompt, `(1, seq)` each.
    pub fn tokens(&self, prompt: &str, device: &Device) -> Result<(Tensor, Tensor)> {
        let [(tokens, _), (tokens_2, _)] = self.rows(prompt, &[], device)?;
        Ok((tokens, tokens_2))
    }

    /// The two token rows of a prompt with the rows of the embeddings it names (`clip_l` for the first
    /// encoder, `clip_g` for the second).
    fn rows(&self, prompt: &str, embeddings: &[ActiveEmbedding], device: &Device) -> Result<[Row; 2]> {
        let row = |(encoder, tokenizer): &(ClipTextEncoder, Option<ClipTokenizer>),
                   index: usize,
                   folder: &str|
         -> Result<Row> {
            let tokenizer = tokenizer
                .as_ref()
                .ok_or_else(|| SdError::layout(Path::new(folder), "the model has no tokenizer here"))?;
            let width = encoder.config().hidden_size;
            let (ids, extra) = tokenizer.encode_with(prompt, embeddings, (index, width))?;
            Ok((Tensor::new(ids, device)?.unsqueeze(0)?, extra))
        };
        Ok([
            row(&self.first, 0, "tokenizer")?,
            row(&self.second, 1, "tokenizer_2")?,
        ])
    }

    /// Encodes token rows of both tokenizers. `clip_skip` counts as the UIs do: 1 takes the penultimate
    /// layer (diffusers' default for SDXL), 2 the one before (diffusers' `clip_skip=1`).
    pub fn encode_tokens(&self, tokens: &Tensor, tokens_2: &Tensor, clip_skip: u32) -> Result<SdxlPrompt> {
        self.encode_rows([(tokens.clone(), None), (tokens_2.clone(), None)], clip_skip)
    }

    fn encode_rows(
        &self,
        [(tokens, extra), (tokens_2, extra_2)]: [Row; 2],
        clip_skip: u32,
    ) -> Result<SdxlPrompt> {
        let skip = clip_skip as usize;
        let (first, second) = (&self.first.0, &self.second.0);
        let out = first.forward_with(&tokens, extra.as_ref())?;
        let out_2 = second.forward_with(&tokens_2, extra_2.as_ref())?;
        let context = Tensor::cat(
            &[first.sdxl_states(&out, skip)?, second.sdxl_states(&out_2, skip)?],
            D::Minus1,
        )?;
        Ok(SdxlPrompt {
            context,
            pooled: second.pooled(&tokens_2, &out_2)?,
        })
    }

    /// Encodes a prompt.
    pub fn encode(&self, prompt: &str, clip_skip: u32, device: &Device) -> Result<SdxlPrompt> {
        self.encode_with(prompt, &[], clip_skip, device)
    }

    /// Encodes a prompt whose words may name textual-inversion `embeddings`.
    pub fn encode_with(
        &self,
        prompt: &str,
        embeddings: &[ActiveEmbedding],
        clip_skip: u32,
        device: &Device,
    ) -> Result<SdxlPrompt> {
        self.encode_rows(self.rows(prompt, embeddings, device)?, clip_skip)
    }

    /// The negative prompt's conditioning: zeros shaped like `positive` when it is empty and the model
    /// says so, else the encoded prompt. Clip skip applies to it too, as the UIs do (diffusers' SDXL
    /// pipeline always takes the negative prompt's penultimate layer).
    pub fn negative(
        &self,
        negative_prompt: &str,
        positive: &SdxlPrompt,
        clip_skip: u32,
        device: &Device,
    ) -> Result<SdxlPrompt> {
        self.negative_with(negative_prompt, &[], positive, clip_skip, device)
    }

    /// [`TextEncoders::negative`] with the embeddings its words may name.
    pub fn negative_with(
        &self,
        negative_prompt: &str,
        embeddings: &[ActiveEmbedding],
        positive: &SdxlPrompt,
        clip_skip: u32,
        device: &Device,
    ) -> Result<SdxlPrompt> {
        if negative_prompt.is_empty() && self.force_zeros_for_empty_prompt {
            return Ok(SdxlPrompt {
                context: positive.context.zeros_like()?,
                pooled: positive.pooled.zeros_like()?,
            });
        }
        self.encode_with(negative_prompt, embeddings, clip_skip, device)
    }
}

/// A token row and the embedding rows its new ids point at.
type Row = (Tensor, Option<ExtraTokens>);
