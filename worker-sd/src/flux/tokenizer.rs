//! Flux's second tokenizer: T5's SentencePiece (Unigram) vocabulary from `tokenizer_2/tokenizer.json`,
//! with rows padded and cut to a fixed length as `FluxPipeline` asks transformers for them
//! (`padding="max_length", truncation=True`, the end token kept on long prompts).

use std::path::{Path, PathBuf};

use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::{Result, SdError};

/// Turns prompts into the fixed-length T5 token rows the second text encoder reads.
pub struct T5Tokenizer {
    tokenizer: Tokenizer,
    path: PathBuf,
}

impl T5Tokenizer {
    /// Loads `folder/tokenizer.json`; rows will be `max_len` long (256 for schnell, 512 for dev).
    pub fn load(folder: &Path, max_len: usize) -> Result<Self> {
        let path = folder.join("tokenizer.json");
        if !path.is_file() {
            return Err(SdError::tokenizer(
                folder,
                "no tokenizer.json (the T5 tokenizer of Flux's tokenizer_2/)",
            ));
        }
        let mut tokenizer = Tokenizer::from_file(&path).map_err(|e| SdError::tokenizer(&path, e))?;
        let pad_token = "<pad>".to_string();
        let pad_id = tokenizer
            .token_to_id(&pad_token)
            .ok_or_else(|| SdError::tokenizer(&path, "the vocabulary lacks <pad>"))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| SdError::tokenizer(&path, e))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_len),
            pad_id,
            pad_token,
            ..Default::default()
        }));
        Ok(T5Tokenizer { tokenizer, path })
    }

    /// `[tokens..., </s>, <pad>...]`, exactly the row length.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|e| SdError::tokenizer(&self.path, e))?;
        Ok(encoding.get_ids().to_vec())
    }
}
