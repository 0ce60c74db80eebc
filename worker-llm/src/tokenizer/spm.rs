//! SentencePiece vocabularies of GGUF files (`tokenizer.ggml.model = llama`: Llama 2, Mistral, Gemma,
//! Phi-3), built from the metadata as a `tokenizers` BPE that tokenizes as llama.cpp does.
//!
//! llama.cpp's SPM tokenizer (`llm_tokenizer_spm`) starts from the text's characters and repeatedly
//! merges the adjacent pair whose concatenation is the vocabulary entry with the highest score (ties: the
//! leftmost), then spells characters missing from the vocabulary as `<0xXX>` byte tokens. A `tokenizers`
//! BPE does the same when its merge list holds every split `(left, right)` of every entry whose halves
//! are entries too, ranked by the entry's score: the BPE merges the lowest-ranked pair first (ties: the
//! leftmost), and `byte_fallback` spells unknown characters as bytes. Scores of SentencePiece vocabularies
//! are distinct (Gemma 3's 255k normal pieces have 255k scores), so the ranks order pairs as the scores do.
//!
//! Around that model, as llama.cpp does: control and unknown tokens are special (parsed only in template
//! text), user-defined tokens (Gemma's runs of newlines and spaces) are always matched first in the raw
//! text, spaces become `▁`, a `▁` is prepended to each text piece when `add_space_prefix` says so, and BOS
//! (`add_bos_token`, default true) and EOS (`add_eos_token`) are added to a sequence.

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, Tokenizer};

use crate::error::{LlmError, Result};
use crate::files::{gguf_int, gguf_u64};

/// `llama_token_type` values of `tokenizer.ggml.token_type`.
const NORMAL: i64 = 1;
const UNKNOWN: i64 = 2;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// SentencePiece's word-boundary mark, which stands for a space inside pieces.
const SPACE_MARK: &str = "\u{2581}";

/// Builds the tokenizer of a GGUF file whose `tokenizer.ggml.model` is `llama`.
pub(super) fn from_gguf(content: &Content) -> Result<Tokenizer> {
    let tokens: Vec<String> = array(content, "tokenizer.ggml.tokens")?
        .ok_or_else(|| LlmError::Tokenizer("GGUF metadata lacks `tokenizer.ggml.tokens`".into()))?
        .iter()
        .map(|v| v.to_string().cloned())
        .collect::<candle_core::Result<_>>()
        .map_err(|e| LlmError::Tokenizer(format!("`tokenizer.ggml.tokens`: {e}")))?;
    let n = tokens.len();
    // llama.cpp reads a missing score as 0 and a missing type as normal.
    let scores: Vec<f32> = match array(content, "tokenizer.ggml.scores")? {
        Some(values) => values.iter().map(|v| v.to_f32().unwrap_or(0.0)).collect(),
        None => vec![0.0; n],
    };
    let types: Vec<i64> = match array(content, "tokenizer.ggml.token_type")? {
        Some(values) => values.iter().map(|v| gguf_int(v).unwrap_or(NORMAL)).collect(),
        // No types at all (hand-made files): take `<...>` entries as control tokens, as their texts say.
        None => tokens
            .iter()
            .map(|t| match t.len() > 2 && t.starts_with('<') && t.ends_with('>') {
                true => CONTROL,
                false => NORMAL,
            })
            .collect(),
    };
    if scores.len() != n || types.len() != n {
        return Err(LlmError::Tokenizer(format!(
            "{n} tokens but {} scores and {} token types in the GGUF metadata",
            scores.len(),
            types.len()
        )));
    }
    let flag = |key: &str, default: bool| {
        content
            .metadata
            .get(key)
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(default)
    };
    let add_space_prefix = flag("tokenizer.ggml.add_space_prefix", true);
    let id = |key: &str| gguf_u64(content, key).map(|id| id as usize).filter(|&id| id < n);

    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab.clone(), merges(&tokens, &scores, &vocab))
        .byte_fallback(true);
    // llama.cpp's defaults for SentencePiece vocabularies: <unk> 0, <s> 1, </s> 2.
    let or_default = |key: &str, default: usize| id(key).or((default < n).then_some(default));
    if let Some(unk) = or_default("tokenizer.ggml.unknown_token_id", 0) {
        builder = builder.unk_token(tokens[unk].clone());
    }
    let bpe = builder.build().map_err(LlmError::tokenizer)?;
    let mut tokenizer = Tokenizer::new(bpe);

    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        normalizers.push(Prepend::new(SPACE_MARK.into()).into());
    }
    normalizers.push(Replace::new(" ", SPACE_MARK).map_err(LlmError::tokenizer)?.into());
    tokenizer
        .with_normalizer(Some(NormalizerSequence::new(normalizers)))
        .map_err(LlmError::tokenizer)?;

    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new(SPACE_MARK, " ").map_err(LlmError::tokenizer)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));

    let mut around = Vec::new();
    if flag("tokenizer.ggml.add_bos_token", true)
        && let Some(bos) = or_default("tokenizer.ggml.bos_token_id", 1)
    {
        around.push(("bos", bos));
    }
    around.push(("text", usize::MAX));
    if flag("tokenizer.ggml.add_eos_token", false)
        && let Some(eos) = or_default("tokenizer.ggml.eos_token_id", 2)
    {
        around.push(("eos", eos));
    }
    if around.len() > 1 {
        tokenizer.with_post_processor(Some(template(&tokens, &around)?));
    }

    // Control and unknown tokens: parsed only where special tokens are (template text). User-defined
    // ones: matched in any text before the pieces are merged, on the raw text (llama.cpp does both).
    let (mut special, mut user) = (Vec::new(), Vec::new());
    for (text, ty) in tokens.iter().zip(&types) {
        match *ty {
            CONTROL | UNKNOWN => special.push(AddedToken::from(text.clone(), true)),
            USER_DEFINED => user.push(AddedToken::from(text.clone(), false).normalized(false)),
            _ => {}
        }
    }
    tokenizer
        .add_special_tokens(special)
        .map_err(LlmError::tokenizer)?;
    tokenizer.add_tokens(user).map_err(LlmError::tokenizer)?;
    Ok(tokenizer)
}

/// Every split of every entry into two entries, ranked by the whole entry's score (highest first; for
/// equal scores, the lower id first).
fn merges(tokens: &[String], scores: &[f32], vocab: &Vocab) -> Vec<(String, String)> {
    let mut ranked: Vec<(f32, usize, &str, &str)> = Vec::new();
    for (id, text) in tokens.iter().enumerate() {
        if vocab.get(text) != Some(&(id as u32)) {
            continue; // a duplicate text: llama.cpp looks up the last id that has it, as the vocab does
        }
        for (at, _) in text.char_indices().skip(1) {
            let (left, right) = text.split_at(at);
            if vocab.contains_key(left) && vocab.contains_key(right) {
                ranked.push((scores[id], id, left, right));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked
        .into_iter()
        .map(|(_, _, l, r)| (l.to_string(), r.to_string()))
        .collect()
}

/// The post-processor adding BOS and/or EOS around a sequence (`("text", _)` marks where it goes).
fn template(tokens: &[String], around: &[(&str, usize)]) -> Result<TemplateProcessing> {
    let single: Vec<String> = around
        .iter()
        .map(|&(what, id)| match what {
            "text" => "$A".to_string(),
            _ => tokens[id].clone(),
        })
        .collect();
    let pair: Vec<String> = single
        .iter()
        .map(|s| format!("{s}:0"))
        .chain(single.iter().map(|s| match s.as_str() {
            "$A" => "$B:1".to_string(),
            s => format!("{s}:1"),
        }))
        .collect();
    let specials: Vec<(String, u32)> = around
        .iter()
        .filter(|(what, _)| *what != "text")
        .map(|&(_, id)| (tokens[id].clone(), id as u32))
        .collect();
    TemplateProcessing::builder()
        .try_single(single)
        .and_then(|b| b.try_pair(pair))
        .map_err(LlmError::Tokenizer)?
        .special_tokens(specials)
        .build()
        .map_err(LlmError::tokenizer)
}

/// A metadata array, `None` when the key is absent.
fn array<'a>(content: &'a Content, key: &str) -> Result<Option<&'a Vec<Value>>> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(v) => v
            .to_vec()
            .map(Some)
            .map_err(|e| LlmError::Tokenizer(format!("`{key}`: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::files::{ModelFiles, open_gguf};
    use crate::tokenizer::TokenizerBundle;

    /// The catalog's demo GGUF (`tests/fixtures/models/tiny-llama-chat.gguf`): a SentencePiece header with
    /// `<unk> <s> </s> <|im_start|> <|im_end|>` then `a`..`z` (ids 5..30), no scores, no token types, no
    /// byte tokens, and a ChatML template; no tensors.
    fn demo() -> TokenizerBundle {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/tiny-llama-chat.gguf");
        let files = ModelFiles::discover(&path).unwrap();
        let (content, _) = open_gguf(&path).unwrap();
        TokenizerBundle::load(&files, Some(&content)).unwrap()
    }

    #[test]
    fn the_demo_gguf_loads_its_sentencepiece_vocabulary_and_template() {
        let bundle = demo();
        let tok = &bundle.tokenizer;
        // Template text: the ChatML markers are its special tokens; the letters are the vocabulary's.
        assert_eq!(tok.encode_chat("<|im_start|>", &[]).unwrap(), [3]);
        assert_eq!(tok.encode_chat("<|im_end|>", &[]).unwrap(), [4]);
        // A space prefix `▁` is added (the default) and is not in this vocabulary, nor are byte tokens:
        // it becomes <unk>. BOS is added to a sequence by default.
        assert_eq!(tok.encode("abc", true).unwrap(), [1, 0, 5, 6, 7]);
        // User text keeps a special token's text as text.
        assert!(!tok.encode("<|im_end|>", false).unwrap().contains(&4));
        let rendered = bundle
            .chat_template
            .expect("the demo file has a chat template")
            .render(&[crate::ChatMessage::new(crate::Role::User, "hi")], true)
            .unwrap();
        assert!(rendered.starts_with("<|im_start|>user"), "{rendered}");
    }

    #[test]
    fn loading_the_demo_gguf_fails_on_its_missing_tensors_not_its_tokenizer() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/tiny-llama-chat.gguf");
        let err = crate::Engine::load_path(&path, &candle_core::Device::Cpu).unwrap_err();
        let message = err.to_string();
        assert!(!message.contains("tokenizer"), "{message}");
        assert!(!message.contains("backtrace"), "{message}");
    }
}
