//! Textual-inversion embeddings: safetensors files of token vectors (SD 1.x/2.x `emb_params` or
//! `string_to_param.*`, or any single tensor; SDXL `clip_l` and `clip_g`), named in a prompt or negative
//! prompt by a word (`easynegative`: a file of the `--embeddings` folder, or a catalog embedding entry by
//! name or id) or explicitly as ComfyUI writes it (`embedding:NAME`).
//!
//! A word naming an embedding becomes its vectors, as diffusers' `load_textual_inversion` makes it: the
//! tokenizer gives each vector a new id after its vocabulary (the largest id + 1, + 2...) and the text
//! encoder reads those ids from the embedding's rows ([`crate::sd::clip::ExtraTokens`]), so the base
//! models are never changed and a prompt without embeddings is encoded exactly as before.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use artifacts_contract::ImageBase;
use candle_core::{DType, Device, Tensor};

use crate::error::{Result, SdError};
use crate::sd::clip::ExtraTokens;

/// The explicit prefix of an embedding in a prompt (ComfyUI's syntax).
pub const PREFIX: &str = "embedding:";

/// A loaded embedding file.
pub struct EmbeddingFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// AUTOMATIC1111's short hash (`TI hashes`): the first 12 hex digits of the file's SHA-256.
    pub short_hash: String,
    /// The base its layout and width imply (`Other` when they do not tell).
    pub base: ImageBase,
    /// Its vectors, `(n, width)`, for each text encoder: `[clip_l, clip_g]` (one entry for SD 1.x/2.x).
    pub vectors: Vec<Option<Tensor>>,
}

impl std::fmt::Debug for EmbeddingFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingFile")
            .field("path", &self.path)
            .field("base", &self.base)
            .finish()
    }
}

/// An embedding named in a request, and the word that names it there.
#[derive(Debug, Clone)]
pub struct ActiveEmbedding {
    /// The word as written in the prompt (`easynegative`, `embedding:easynegative`, `civitai:7808`).
    pub word: String,
    /// The file.
    pub file: Arc<EmbeddingFile>,
}

fn invalid(message: String) -> SdError {
    SdError::invalid("embeddings", message)
}

impl EmbeddingFile {
    /// Reads `path` (safetensors only; pickle files are refused before anything is opened).
    pub fn read(path: &Path) -> Result<Self> {
        crate::loading::refuse_pickle(path)?;
        let tensors = crate::loading::read_safetensors(path, &Device::Cpu)?;
        let what = || path.display().to_string();
        let as_rows = |key: &str, t: &Tensor| -> Result<Tensor> {
            let t = t.to_dtype(DType::F32)?;
            match t.rank() {
                1 => Ok(t.unsqueeze(0)?),
                2 if t.dim(0)? > 0 => Ok(t),
                _ => Err(invalid(format!(
                    "{}: tensor {key} has shape {:?}; an embedding is (vectors, width)",
                    what(),
                    t.dims()
                ))),
            }
        };
        let (vectors, base) = if tensors.contains_key("clip_l") || tensors.contains_key("clip_g") {
            let get = |key: &str| tensors.get(key).map(|t| as_rows(key, t)).transpose();
            (vec![get("clip_l")?, get("clip_g")?], ImageBase::Sdxl)
        } else {
            let (key, tensor) = match tensors.get_key_value("emb_params") {
                Some(pair) => pair,
                None if tensors.len() == 1 => tensors.iter().next().expect("one tensor"),
                None => {
                    let mut keys: Vec<_> = tensors.keys().cloned().collect();
                    keys.sort();
                    return Err(invalid(format!(
                        "{} is not a textual-inversion embedding (keys: {})",
                        what(),
                        keys.join(", ")
                    )));
                }
            };
            let rows = as_rows(key, tensor)?;
            let base = match rows.dim(1)? {
                768 => ImageBase::Sd1,
                1024 => ImageBase::Sd2,
                _ => ImageBase::Other,
            };
            (vec![Some(rows)], base)
        };
        Ok(EmbeddingFile {
            path: path.to_path_buf(),
            short_hash: crate::lora::file_sha256(path)?[..12].to_string(),
            base,
            vectors,
        })
    }
}

/// The words of a prompt that may name an embedding: runs of characters between whitespace and
/// `,;()[]{}|"`, with ComfyUI's `embedding:` prefix kept.
pub fn candidates(prompt: &str) -> impl Iterator<Item = &str> {
    prompt
        .split(|c: char| c.is_whitespace() || ",;()[]{}|\"".contains(c))
        .filter(|w| !w.is_empty())
}

/// The name after ComfyUI's `embedding:` prefix, when `word` has it.
pub fn explicit(word: &str) -> Option<&str> {
    let head = word.get(..PREFIX.len())?;
    (head.eq_ignore_ascii_case(PREFIX) && word.len() > PREFIX.len()).then(|| &word[PREFIX.len()..])
}

/// One piece of a prompt: text for the tokenizer, or the vectors of an embedding.
#[derive(Debug, PartialEq)]
pub enum Segment<'a> {
    /// Plain text.
    Text(&'a str),
    /// The embedding at this index of the list given to [`segments`].
    Embedding(usize),
}

/// Splits `prompt` where a word names one of `embeddings` (case-insensitively, as the tokenizer's
/// lower-casing makes diffusers' and AUTOMATIC1111's matching).
pub fn segments<'a>(prompt: &'a str, embeddings: &[ActiveEmbedding]) -> Vec<Segment<'a>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut rest = prompt;
    let base = prompt.as_ptr() as usize;
    for word in candidates(prompt) {
        let Some(index) = embeddings.iter().position(|e| e.word.eq_ignore_ascii_case(word)) else {
            continue;
        };
        let at = word.as_ptr() as usize - base;
        if at > start {
            out.push(Segment::Text(&prompt[start..at]));
        }
        out.push(Segment::Embedding(index));
        start = at + word.len();
        rest = &prompt[start..];
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(Segment::Text(rest));
    }
    out
}

/// A prompt's token ids with its embeddings' vectors for text encoder `encoder` (0 or SDXL's 1, `width`
/// wide), as the tokenizer `encode` and its first free id `first_id` give them: the ids and the rows they
/// point at.
pub fn tokenize(
    prompt: &str,
    embeddings: &[ActiveEmbedding],
    (encoder, width): (usize, usize),
    first_id: u32,
    encode: &dyn Fn(&str) -> Result<Vec<u32>>,
) -> Result<(Vec<u32>, Option<ExtraTokens>)> {
    let mut ids = Vec::new();
    let mut rows: Vec<Tensor> = Vec::new();
    // Each distinct embedding takes the next ids once, as loading it into diffusers' tokenizer does.
    let mut assigned: HashMap<usize, u32> = HashMap::new();
    for segment in segments(prompt, embeddings) {
        match segment {
            Segment::Text(text) => ids.extend(encode(text)?),
            Segment::Embedding(index) => {
                let embedding = &embeddings[index];
                let vectors = embedding
                    .file
                    .vectors
                    .get(encoder)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| {
                        invalid(format!(
                            "{} has no vectors for text encoder {} ({})",
                            embedding.word,
                            encoder + 1,
                            if encoder == 0 { "clip_l" } else { "clip_g" }
                        ))
                    })?;
                if vectors.dim(1)? != width {
                    return Err(invalid(format!(
                        "{} has vectors of shape {:?} but this model's text encoder {} is {width} wide",
                        embedding.word,
                        vectors.dims(),
                        encoder + 1
                    )));
                }
                let count = vectors.dim(0)? as u32;
                let first = match assigned.get(&index) {
                    Some(first) => *first,
                    None => {
                        let first = first_id + rows.iter().map(|r| r.dim(0).unwrap_or(0) as u32).sum::<u32>();
                        rows.push(vectors);
                        assigned.insert(index, first);
                        first
                    }
                };
                ids.extend(first..first + count);
            }
        }
    }
    let extra = if rows.is_empty() {
        None
    } else {
        Some(ExtraTokens {
            first_id,
            rows: Tensor::cat(&rows, 0)?,
        })
    };
    Ok((ids, extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(word: &str, n: usize) -> ActiveEmbedding {
        ActiveEmbedding {
            word: word.into(),
            file: Arc::new(EmbeddingFile {
                path: PathBuf::new(),
                short_hash: String::new(),
                base: ImageBase::Other,
                vectors: vec![Some(Tensor::ones((n, 4), DType::F32, &Device::Cpu).unwrap())],
            }),
        }
    }

    #[test]
    fn words_naming_embeddings_split_the_prompt() {
        let list = [active("easyneg", 2), active("embedding:style", 1)];
        assert_eq!(
            segments("bad, EasyNeg (embedding:style) easynegx", &list),
            vec![
                Segment::Text("bad, "),
                Segment::Embedding(0),
                Segment::Text(" ("),
                Segment::Embedding(1),
                Segment::Text(") easynegx"),
            ]
        );
        assert_eq!(segments("", &list), vec![Segment::Text("")]);
        assert_eq!(
            candidates("a (civitai:7808), b").collect::<Vec<_>>(),
            ["a", "civitai:7808", "b"]
        );
    }

    #[test]
    fn each_embedding_takes_ids_once_after_the_vocabulary() {
        let list = [active("x", 2), active("y", 1)];
        let encode = |text: &str| -> Result<Vec<u32>> { Ok(text.split_whitespace().map(|_| 7).collect()) };
        let (ids, extra) = tokenize("a x y x b", &list, (0, 4), 100, &encode).unwrap();
        assert_eq!(ids, [7, 100, 101, 102, 100, 101, 7]);
        let extra = extra.unwrap();
        assert_eq!((extra.first_id, extra.rows.dims()), (100, &[3, 4][..]));
        assert!(tokenize("x", &list, (1, 4), 100, &encode).is_err());
        let err = tokenize("x", &list, (0, 8), 100, &encode)
            .unwrap_err()
            .to_string();
        assert!(err.contains("[2, 4]") && err.contains("8 wide"), "{err}");
    }
}
