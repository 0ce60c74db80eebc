//! Finding a model's files (a GGUF file, or safetensors shards with their JSON configs) and reading the
//! facts every architecture shares: architecture name, context length, vocab size, end-of-sequence ids.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use artifacts_contract::WeightFormat;
use candle_core::quantized::gguf_file;

use crate::error::{LlmError, Result};

/// The files of one model, classified by role; built from a folder, a single file or a catalog entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelFiles {
    /// Where the files live (error messages name it).
    pub root: PathBuf,
    /// The GGUF weights, when the model is a GGUF file.
    pub gguf: Option<PathBuf>,
    /// Safetensors weights: one file, or every shard (sorted).
    pub safetensors: Vec<PathBuf>,
    /// `config.json`.
    pub config: Option<PathBuf>,
    /// `generation_config.json`.
    pub generation_config: Option<PathBuf>,
    /// `tokenizer.json`.
    pub tokenizer: Option<PathBuf>,
    /// `tokenizer_config.json`.
    pub tokenizer_config: Option<PathBuf>,
    /// `chat_template.jinja`.
    pub chat_template: Option<PathBuf>,
}

impl ModelFiles {
    /// Looks at a `.gguf` file, a `.safetensors` file or a folder holding either.
    pub fn discover(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| LlmError::io(path, e))?;
        if meta.is_file() {
            let dir = path.parent().unwrap_or(Path::new("."));
            let mut siblings = list_dir(dir)?;
            // A single weights file: keep its sibling configs, drop other weights.
            siblings.retain(|p| !is_weights(p) || p == path);
            return Self::from_paths(dir, siblings);
        }
        Self::from_paths(path, list_dir(path)?)
    }

    /// Classifies the paths of a model (as a catalog entry lists them) by file name.
    pub fn from_paths(root: &Path, paths: impl IntoIterator<Item = PathBuf>) -> Result<Self> {
        let mut files = ModelFiles {
            root: root.to_path_buf(),
            ..Default::default()
        };
        let mut ggufs = Vec::new();
        for p in paths {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            match name.as_str() {
                "config.json" => files.config = Some(p),
                "generation_config.json" => files.generation_config = Some(p),
                "tokenizer.json" => files.tokenizer = Some(p),
                "tokenizer_config.json" => files.tokenizer_config = Some(p),
                "chat_template.jinja" => files.chat_template = Some(p),
                n if n.ends_with(".gguf") => ggufs.push(p),
                n if n.ends_with(".safetensors") => files.safetensors.push(p),
                _ => {}
            }
        }
        files.safetensors.sort();
        let fail = |reason: String| {
            Err(LlmError::ModelFiles {
                path: root.to_path_buf(),
                reason,
            })
        };
        match (ggufs.len(), files.safetensors.is_empty()) {
            (0, true) => return fail("no .gguf or .safetensors weights here".into()),
            (1, _) => files.gguf = ggufs.pop(),
            (0, false) if files.config.is_none() => {
                return fail("safetensors weights need a config.json beside them".into());
            }
            (0, false) => {}
            (n, _) => {
                return fail(format!(
                    "{n} .gguf files here: name the one to load with its full path"
                ));
            }
        }
        if files.gguf.is_some() {
            files.safetensors.clear();
        }
        Ok(files)
    }

    /// The weight format the files hold.
    pub fn format(&self) -> WeightFormat {
        if self.gguf.is_some() {
            WeightFormat::Gguf
        } else {
            WeightFormat::Safetensors
        }
    }

    /// The config.json parsed as `T`, for a safetensors architecture's loader.
    pub fn config_as<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let path = self.config.as_ref().ok_or_else(|| LlmError::ModelFiles {
            path: self.root.clone(),
            reason: "no config.json".into(),
        })?;
        read_json_as(path)
    }
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| LlmError::io(dir, e))?;
    entries
        .map(|e| e.map(|e| e.path()).map_err(|e| LlmError::io(dir, e)))
        .collect()
}

fn is_weights(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("gguf" | "safetensors")
    )
}

/// Parses a JSON file, naming the file in the error.
pub(crate) fn read_json_as<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| LlmError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| LlmError::Config {
        file: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Reads a GGUF file's header (metadata and tensor index) and keeps the file open for the tensors.
pub fn open_gguf(path: &Path) -> Result<(gguf_file::Content, std::fs::File)> {
    let mut file = std::fs::File::open(path).map_err(|e| LlmError::io(path, e))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| LlmError::ModelFiles {
        path: path.to_path_buf(),
        reason: format!("not a readable GGUF file: {e}"),
    })?;
    Ok((content, file))
}

/// An integer GGUF metadata value of any width.
pub(crate) fn gguf_u64(content: &gguf_file::Content, key: &str) -> Option<u64> {
    u64::try_from(gguf_int(content.metadata.get(key)?)?).ok()
}

/// An integer GGUF value of any width (metadata or array element).
pub(crate) fn gguf_int(value: &gguf_file::Value) -> Option<i64> {
    use gguf_file::Value::*;
    match value {
        U8(v) => Some(*v as i64),
        U16(v) => Some(*v as i64),
        U32(v) => Some(*v as i64),
        U64(v) => i64::try_from(*v).ok(),
        I8(v) => Some(*v as i64),
        I16(v) => Some(*v as i64),
        I32(v) => Some(*v as i64),
        I64(v) => Some(*v),
        _ => None,
    }
}

/// A string GGUF metadata value.
pub(crate) fn gguf_str<'a>(content: &'a gguf_file::Content, key: &str) -> Option<&'a str> {
    content.metadata.get(key)?.to_string().ok().map(String::as_str)
}

/// What the engine needs to know of any model, whatever its architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelMeta {
    /// `general.architecture` (GGUF) or `model_type` (config.json).
    pub architecture: String,
    /// Tokens that end a generation.
    pub eos_token_ids: BTreeSet<u32>,
    /// Size of the logits vector.
    pub vocab_size: usize,
    /// The longest sequence (prompt plus output) the model was trained for.
    pub context_length: usize,
}

/// The token texts llama.cpp also treats as end of generation, whatever the metadata says.
pub(crate) const END_OF_TURN_TOKENS: [&str; 6] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
];

impl ModelMeta {
    /// Reads the shared facts of a GGUF model from its metadata.
    pub fn from_gguf(path: &Path, content: &gguf_file::Content) -> Result<Self> {
        let missing = |key: &str| LlmError::ModelFiles {
            path: path.to_path_buf(),
            reason: format!("GGUF metadata lacks `{key}`"),
        };
        let architecture =
            gguf_str(content, "general.architecture").ok_or_else(|| missing("general.architecture"))?;
        let ctx_key = format!("{architecture}.context_length");
        let context_length = gguf_u64(content, &ctx_key).ok_or_else(|| missing(&ctx_key))? as usize;
        let tokens = content
            .metadata
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .ok_or_else(|| missing("tokenizer.ggml.tokens"))?;
        let mut eos_token_ids: BTreeSet<u32> = gguf_u64(content, "tokenizer.ggml.eos_token_id")
            .map(|id| id as u32)
            .into_iter()
            .collect();
        eos_token_ids.extend(gguf_u64(content, "tokenizer.ggml.eot_token_id").map(|id| id as u32));
        for (i, t) in tokens.iter().enumerate() {
            if let Ok(text) = t.to_string()
                && END_OF_TURN_TOKENS.contains(&text.as_str())
            {
                eos_token_ids.insert(i as u32);
            }
        }
        let vocab_size =
            gguf_u64(content, &format!("{architecture}.vocab_size")).map_or(tokens.len(), |v| v as usize);
        Ok(ModelMeta {
            architecture: architecture.to_string(),
            eos_token_ids,
            vocab_size,
            context_length,
        })
    }

    /// Reads the shared facts of a safetensors model from config.json and generation_config.json.
    pub fn from_configs(files: &ModelFiles) -> Result<Self> {
        let config: serde_json::Value = files.config_as()?;
        let file = files
            .config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        // Gemma 3 multimodal configs keep the language model's fields under `text_config`.
        let text = config.get("text_config").unwrap_or(&config);
        let field = |key: &str| text.get(key).or_else(|| config.get(key));
        let number = |key: &str| {
            field(key)
                .and_then(|v| v.as_u64())
                .ok_or_else(|| LlmError::Config {
                    file: file.clone(),
                    reason: format!("no integer `{key}`"),
                })
        };
        let architecture = field("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| LlmError::Config {
                file: file.clone(),
                reason: "no `model_type`".into(),
            })?
            .to_string();
        let mut eos_token_ids = ids(field("eos_token_id"));
        if let Some(path) = &files.generation_config {
            let generation: serde_json::Value = read_json_as(path)?;
            eos_token_ids.extend(ids(generation.get("eos_token_id")));
        }
        Ok(ModelMeta {
            architecture,
            eos_token_ids,
            vocab_size: number("vocab_size")? as usize,
            context_length: number("max_position_embeddings")? as usize,
        })
    }
}

/// `eos_token_id` as configs write it: one integer or a list.
fn ids(v: Option<&serde_json::Value>) -> BTreeSet<u32> {
    match v {
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
        Some(x) => x.as_u64().map(|x| x as u32).into_iter().collect(),
        None => BTreeSet::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_with_two_gguf_files_is_ambiguous() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["a.gguf", "b.gguf"] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        let err = ModelFiles::discover(dir.path()).unwrap_err();
        assert!(err.to_string().contains("2 .gguf files"), "{err}");
    }

    #[test]
    fn safetensors_shards_are_sorted_and_need_a_config() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "model-00002-of-00002.safetensors",
            "model-00001-of-00002.safetensors",
        ] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        let err = ModelFiles::discover(dir.path()).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        let files = ModelFiles::discover(dir.path()).unwrap();
        assert_eq!(files.format(), WeightFormat::Safetensors);
        let names: Vec<_> = files
            .safetensors
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ]
        );
    }

    #[test]
    fn a_folder_without_weights_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelFiles::discover(dir.path()).unwrap_err();
        assert!(err.to_string().contains("no .gguf or .safetensors"), "{err}");
    }
}
