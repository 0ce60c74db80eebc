//! Ingestion: pure functions from what a source says (JSON, header bytes, file listings) to contract types.
//!
//! Nothing here touches the file system, the network or the clock (`now` is a parameter), so the wasm
//! module calls the same functions with the browser's fetch. The native side (`sources`) does the I/O:
//! it asks these functions which files to fetch, fetches them, and hands the bytes back.
//!
//! - [`hf`]: HuggingFace Hub model info, search results, GGUF file choice.
//! - [`civitai`]: CivitAI models, versions and search results.
//! - [`gguf`], [`safetensors`]: weight-file headers.
//! - [`hf_files`]: `config.json` and friends, diffusers' `model_index.json`.
//! - [`local`]: files and folders on disk, from a listing and the bytes read.
//! - [`fetch`]: the request sequences (which URL next, Range reads, caps, what a refusal means), which
//!   the native client and the wasm module only perform.
//! - [`names`]: the one check of names from the network before they touch a path.

pub mod civitai;
pub mod fetch;
pub mod gguf;
pub mod hf;
pub mod hf_files;
pub mod local;
pub mod names;
pub mod repo_files;
pub mod safetensors;

use artifacts_contract::FileRole;

pub use gguf::GgufError;
pub use names::{NameKind, UnsafeName, check_name};
pub use safetensors::SafetensorsError;

/// Why a source's answer could not be turned into an entry; each message names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// A JSON document is malformed, truncated or not the expected shape.
    #[error("malformed {what}: {message}")]
    Json {
        /// Which document (`model info`, `config.json`...).
        what: String,
        /// What the JSON parser said.
        message: String,
    },
    /// A GGUF header could not be read.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A safetensors header could not be read.
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    /// Several GGUF files fit and none is the obvious default.
    #[error("{repo} has several GGUF files{}: {}; pick one with hf:{repo}:QUANT, e.g. hf:{repo}:{}", wanted.as_deref().map(|w| format!(" matching {w:?}")).unwrap_or_default(), choices.join(", "), first_quant(choices))]
    AmbiguousGguf {
        /// The repository.
        repo: String,
        /// The selector given, if any.
        wanted: Option<String>,
        /// The candidate files.
        choices: Vec<String>,
    },
    /// The selector names nothing in the repository.
    #[error("{repo} has no file or quantization {wanted:?}; it has: {}", if choices.is_empty() { "no GGUF files".to_string() } else { choices.join(", ") })]
    NoMatch {
        /// The repository.
        repo: String,
        /// The selector given.
        wanted: String,
        /// What it does have.
        choices: Vec<String>,
    },
    /// No weights in a format the catalog can describe.
    #[error("{0} has no weight files (safetensors, GGUF) the catalog can use")]
    NoWeights(String),
    /// A name from remote metadata (file, sha, revision, version id) would escape its folder.
    #[error(transparent)]
    UnsafeName(#[from] UnsafeName),
    /// The weights are in a pickle format and the user did not allow it.
    #[error(
        "{file} is a pickle file, which can run arbitrary code when loaded; pass --allow-pickle to catalog it anyway"
    )]
    Pickle {
        /// The file.
        file: String,
    },
    /// A local file or folder is none of the layouts the catalog knows.
    #[error("cannot tell what {0} is: {1}")]
    Unrecognized(String, String),
    /// The source has no such model (a 404 where the model should be).
    #[error("{0}")]
    NotFound(String),
    /// A gated repo refused its files.
    #[error(
        "{id} is gated: accept its terms at https://huggingface.co/{repo} and set HF_TOKEN to a token with access"
    )]
    Gated {
        /// The id asked for.
        id: String,
        /// The repository.
        repo: String,
    },
    /// A function for one source was given another source's id.
    #[error("{id} is not a {expected} id")]
    WrongScheme {
        /// The id given.
        id: String,
        /// The scheme expected.
        expected: &'static str,
    },
}

fn first_quant(choices: &[String]) -> String {
    choices
        .first()
        .and_then(|c| hf::quant_of_file_name(c))
        .unwrap_or_else(|| "Q4_K_M".into())
}

impl IngestError {
    /// A JSON error naming the document.
    pub fn json(what: &str, e: serde_json::Error) -> Self {
        IngestError::Json {
            what: what.to_string(),
            message: e.to_string(),
        }
    }
}

/// True when a path from remote metadata stays inside its folder (see [`names::check_name`]).
pub fn is_safe_relative_path(path: &str) -> bool {
    check_name(NameKind::FilePath, path).is_ok()
}

/// Checks a remote file path, as every source must before a [`artifacts_contract::ModelFile`] is built.
pub fn safe_path(path: &str) -> Result<String, IngestError> {
    check_name(NameKind::FilePath, path)?;
    Ok(path.to_string())
}

/// What a file in a model folder is for, from its name.
pub fn role_of(path: &str) -> FileRole {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let in_vae = path.starts_with("vae/");
    if name == "chat_template.jinja" {
        FileRole::ChatTemplate
    } else if name.starts_with("tokenizer")
        || name == "vocab.json"
        || name == "merges.txt"
        || name == "special_tokens_map.json"
        || name == "spiece.model"
    {
        FileRole::Tokenizer
    } else if name.ends_with(".json") {
        FileRole::Config
    } else if is_weight_name(&name) {
        if in_vae { FileRole::Vae } else { FileRole::Weights }
    } else {
        FileRole::Other
    }
}

/// Weight files by extension, pickle formats included (so they can be refused by name); the list is
/// the contract's.
pub use artifacts_contract::weights::{is_pickle_name, is_weight_name};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths_that_escape_are_refused() {
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "C:\\x",
            "a//b",
            "",
            "a\\..\\b",
            "./x",
        ] {
            assert!(safe_path(bad).is_err(), "{bad}");
        }
        assert_eq!(
            safe_path("unet/model.safetensors").unwrap(),
            "unet/model.safetensors"
        );
    }

    #[test]
    fn roles_follow_file_names() {
        assert_eq!(role_of("model-00001-of-00002.safetensors"), FileRole::Weights);
        assert_eq!(role_of("vae/diffusion_pytorch_model.safetensors"), FileRole::Vae);
        assert_eq!(role_of("tokenizer.json"), FileRole::Tokenizer);
        assert_eq!(role_of("config.json"), FileRole::Config);
        assert_eq!(role_of("chat_template.jinja"), FileRole::ChatTemplate);
        assert_eq!(role_of("README.md"), FileRole::Other);
    }
}
