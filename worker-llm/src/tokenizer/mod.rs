//! The tokenizer and chat template of a model, from `tokenizer.json` and `tokenizer_config.json` or, for
//! a GGUF file without them, from the GGUF metadata.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use tokenizers::Tokenizer;

use crate::chat::{ChatMessage, ChatTemplate};
use crate::error::{LlmError, Result};
use crate::files::{ModelFiles, gguf_str, gguf_u64, read_json_as};

mod spm;

/// A tokenizer that keeps user text apart from the template's special tokens.
#[derive(Clone)]
pub struct TextTokenizer {
    /// Parses `<|special|>` strings into special tokens: for text the template wrote.
    with_specials: Tokenizer,
    /// Treats every string as plain text: for text users wrote.
    plain: Tokenizer,
    /// Texts of the special tokens, to tell whether user text contains one.
    special_texts: Vec<String>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.plain.get_vocab_size(true))
            .finish()
    }
}

impl TextTokenizer {
    fn new(tokenizer: Tokenizer) -> Self {
        let special_texts = tokenizer
            .get_added_tokens_decoder()
            .values()
            .filter(|t| t.special)
            .map(|t| t.content.clone())
            .collect();
        let mut plain = tokenizer.clone();
        plain.set_encode_special_tokens(true);
        TextTokenizer {
            with_specials: tokenizer,
            plain,
            special_texts,
        }
    }

    /// Tokenizes text a user wrote: `<|special|>` strings in it stay text. `add_special_tokens` adds what
    /// the tokenizer adds to a sequence (usually BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .plain
            .encode(text, add_special_tokens)
            .map_err(LlmError::tokenizer)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Tokenizes a rendered chat prompt: the template's special tokens become special ids, the messages'
    /// contents stay text. Like transformers' `apply_chat_template`, adds no BOS of its own.
    pub fn encode_chat(&self, rendered: &str, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let has_special = |s: &str| self.special_texts.iter().any(|t| s.contains(t.as_str()));
        let encode = |tok: &Tokenizer, s: &str| -> Result<Vec<u32>> {
            Ok(tok
                .encode(s, false)
                .map_err(LlmError::tokenizer)?
                .get_ids()
                .to_vec())
        };
        if !messages.iter().any(|m| has_special(&m.content)) {
            // The common case, tokenized in one piece exactly as the reference implementations do.
            return encode(&self.with_specials, rendered);
        }
        // Split the rendered text at each message's content (in order); contents are encoded as text.
        let mut ids = Vec::new();
        let mut rest = rendered;
        for m in messages.iter().filter(|m| !m.content.is_empty()) {
            if let Some(at) = rest.find(m.content.as_str()) {
                ids.extend(encode(&self.with_specials, &rest[..at])?);
                ids.extend(encode(&self.plain, &m.content)?);
                rest = &rest[at + m.content.len()..];
            }
        }
        ids.extend(encode(&self.with_specials, rest)?);
        Ok(ids)
    }

    /// Decodes ids to text, leaving special tokens out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.plain.decode(ids, true).map_err(LlmError::tokenizer)
    }

    /// The text of one token as the vocabulary stores it.
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.plain.id_to_token(id)
    }

    /// The id of a token text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.plain.token_to_id(text)
    }
}

/// A model's tokenizer and chat template, loaded together because they share special-token names.
pub struct TokenizerBundle {
    /// The tokenizer.
    pub tokenizer: TextTokenizer,
    /// The chat template, when the model has one.
    pub chat_template: Option<ChatTemplate>,
}

impl TokenizerBundle {
    /// Loads from `tokenizer.json` when present, else from the GGUF metadata (`gguf`).
    pub fn load(files: &ModelFiles, gguf: Option<&gguf_file::Content>) -> Result<Self> {
        match (&files.tokenizer, gguf) {
            (Some(path), _) => Self::from_json_files(path, files),
            (None, Some(content)) => Self::from_gguf(content),
            (None, None) => Err(LlmError::ModelFiles {
                path: files.root.clone(),
                reason: "no tokenizer.json beside the safetensors weights".into(),
            }),
        }
    }

    fn from_gguf(content: &gguf_file::Content) -> Result<Self> {
        let tokenizer = match gguf_str(content, "tokenizer.ggml.model") {
            Some("gpt2") => {
                let mut tokenizer = Tokenizer::from_gguf(content)
                    .map_err(|e| LlmError::tokenizer(crate::error::without_backtrace(e)))?;
                fix_gpt2_pre_tokenizer(&mut tokenizer, content);
                tokenizer
            }
            Some("llama") => spm::from_gguf(content)?,
            other => {
                return Err(LlmError::Tokenizer(format!(
                    "unsupported tokenizer model `{}` in the GGUF metadata (supported: gpt2, llama)",
                    other.unwrap_or("(none)")
                )));
            }
        };
        let tokenizer = TextTokenizer::new(tokenizer);
        let token = |key: &str| {
            gguf_u64(content, key)
                .and_then(|id| tokenizer.token_text(id as u32))
                .unwrap_or_default()
        };
        let (bos, eos) = (
            token("tokenizer.ggml.bos_token_id"),
            token("tokenizer.ggml.eos_token_id"),
        );
        let chat_template = gguf_str(content, "tokenizer.chat_template")
            .map(|source| ChatTemplate::new(source, &bos, &eos))
            .transpose()?;
        Ok(TokenizerBundle {
            tokenizer,
            chat_template,
        })
    }

    fn from_json_files(path: &Path, files: &ModelFiles) -> Result<Self> {
        let tokenizer = Tokenizer::from_file(path)
            .map_err(|e| LlmError::Tokenizer(format!("{}: {e}", path.display())))?;
        let config: HashMap<String, serde_json::Value> = match &files.tokenizer_config {
            Some(p) => read_json_as(p)?,
            None => HashMap::new(),
        };
        let special = |key: &str| match config.get(key) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or_default()
                .to_string(),
            None => String::new(),
        };
        let source = match &files.chat_template {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|e| LlmError::io(p, e))?),
            None => template_from_config(config.get("chat_template")),
        };
        let chat_template = source
            .map(|s| ChatTemplate::new(&s, &special("bos_token"), &special("eos_token")))
            .transpose()?;
        Ok(TokenizerBundle {
            tokenizer: TextTokenizer::new(tokenizer),
            chat_template,
        })
    }
}

/// candle gives GGUF BPE vocabularies it does not know by `tokenizer.ggml.pre` GPT-2's byte-level
/// pre-tokenizer with a space added before the text, which llama.cpp does only when
/// `tokenizer.ggml.add_space_prefix` says so; `smollm` also splits digits one by one (as its
/// tokenizer.json and llama.cpp do).
fn fix_gpt2_pre_tokenizer(tokenizer: &mut Tokenizer, content: &gguf_file::Content) {
    use tokenizers::pre_tokenizers::{byte_level::ByteLevel, digits::Digits, sequence::Sequence};
    let pre = gguf_str(content, "tokenizer.ggml.pre").unwrap_or("gpt2");
    if matches!(pre, "qwen2" | "smaug-bpe" | "lfm2" | "llama3") {
        return;
    }
    let add_prefix_space = content
        .metadata
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(false);
    let byte_level = ByteLevel::new(add_prefix_space, true, true);
    let steps = match pre {
        "smollm" => vec![Digits::new(true).into(), byte_level.into()],
        _ => vec![byte_level.into()],
    };
    tokenizer.with_pre_tokenizer(Some(Sequence::new(steps)));
}

/// `chat_template` of tokenizer_config.json: a string, or a list of named templates (take `default`).
fn template_from_config(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(items) => items
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(String::from)),
        _ => None,
    }
}
