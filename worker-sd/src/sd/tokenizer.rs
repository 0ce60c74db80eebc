//! The CLIP tokenizer of a pipeline, from `tokenizer/tokenizer.json` when the repo has one, else built
//! from the `vocab.json` and `merges.txt` that SD repos ship, with the normalizer, pre-tokenizer and
//! end-of-word suffix of transformers' CLIP converter.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{SplitDelimiterBehavior, Tokenizer};

use super::clip::ExtraTokens;
use crate::embeddings::ActiveEmbedding;
use crate::error::{Result, SdError};

/// transformers' CLIP word pattern.
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";

/// Turns prompts into the fixed-length token rows the text encoder reads.
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    bos: u32,
    eos: u32,
    pad: u32,
    max_len: usize,
}

impl ClipTokenizer {
    /// Loads `folder/tokenizer.json`, or builds from `folder/vocab.json` + `folder/merges.txt`; rows are
    /// `max_len` long, padded with `tokenizer_config.json`'s `pad_token` (the end token by default).
    pub fn load(folder: &Path, max_len: usize) -> Result<Self> {
        let json = folder.join("tokenizer.json");
        let tokenizer = if json.is_file() {
            Tokenizer::from_file(&json).map_err(|e| SdError::tokenizer(&json, e))?
        } else {
            build(folder)?
        };
        let id = |token: &str| {
            tokenizer.token_to_id(token).ok_or_else(|| SdError::Tokenizer {
                path: folder.to_path_buf(),
                message: format!("the vocabulary lacks {token}"),
            })
        };
        let (bos, eos) = (id(BOS)?, id(EOS)?);
        let pad = pad_token(folder)
            .and_then(|token| tokenizer.token_to_id(&token))
            .unwrap_or(eos);
        Ok(ClipTokenizer {
            tokenizer,
            bos,
            eos,
            pad,
            max_len,
        })
    }

    /// `[bos, tokens..., eos, pad...]`, cut to the row length with the end token kept, as transformers does.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        Ok(self.row(self.ids(prompt)?))
    }

    /// [`ClipTokenizer::encode`] with the words of `prompt` that name `embeddings` as their vectors for
    /// text encoder `encoder` (`width` wide): the row, and the embedding rows its new ids point at.
    pub fn encode_with(
        &self,
        prompt: &str,
        embeddings: &[ActiveEmbedding],
        encoder: (usize, usize),
    ) -> Result<(Vec<u32>, Option<ExtraTokens>)> {
        if embeddings.is_empty() {
            return Ok((self.encode(prompt)?, None));
        }
        let (ids, extra) =
            crate::embeddings::tokenize(prompt, embeddings, encoder, self.first_free_id(), &|text| {
                self.ids(text)
            })?;
        Ok((self.row(ids), extra))
    }

    /// The id a token added to the vocabulary gets: one past the largest, as `tokenizers` assigns it.
    pub fn first_free_id(&self) -> u32 {
        self.tokenizer
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |max| max + 1)
    }

    /// The ids of a text, without the start and end tokens.
    fn ids(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| SdError::Tokenizer {
                path: Default::default(),
                message: e.to_string(),
            })?;
        Ok(encoding.get_ids().to_vec())
    }

    fn row(&self, tokens: Vec<u32>) -> Vec<u32> {
        let mut ids = vec![self.bos];
        ids.extend(tokens.into_iter().take(self.max_len.saturating_sub(2)));
        ids.push(self.eos);
        ids.resize(self.max_len, self.pad);
        ids
    }
}

/// The `pad_token` of `tokenizer_config.json` (a string or `{"content": ...}`), if any.
fn pad_token(folder: &Path) -> Option<String> {
    let text = std::fs::read_to_string(folder.join("tokenizer_config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    match &config["pad_token"] {
        serde_json::Value::String(s) => Some(s.clone()),
        value => value["content"].as_str().map(str::to_string),
    }
}

/// The tokenizer transformers' `CLIPConverter` makes from the slow tokenizer's files.
fn build(folder: &Path) -> Result<Tokenizer> {
    let (vocab, merges) = (folder.join("vocab.json"), folder.join("merges.txt"));
    let err = |e: Box<dyn std::error::Error + Send + Sync>| SdError::tokenizer(folder, e);
    let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .unk_token(EOS.to_string())
        .end_of_word_suffix("</w>".to_string())
        .build()
        .map_err(err)?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_normalizer(Some(NormalizerSequence::new(vec![
            NFC.into(),
            Replace::new(
                tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
                " ",
            )
            .map_err(err)?
            .into(),
            Lowercase.into(),
        ])))
        .map_err(err)?;
    let split = Split::new(
        SplitPattern::Regex(CLIP_PATTERN.into()),
        SplitDelimiterBehavior::Removed,
        true,
    )
    .map_err(err)?;
    tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
        split.into(),
        ByteLevel::new(false, true, false).into(),
    ])));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tokenizer)
}
