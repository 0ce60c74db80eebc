//! The library's one error type: each variant names the file, field or value at fault.

use std::path::{Path, PathBuf};

use crate::schedulers::SchedulerError;

/// Why loading a model or generating an image failed.
#[derive(Debug, thiserror::Error)]
pub enum SdError {
    /// A request parameter is out of range or malformed; `field` is its name in the request.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The request field (`width`, `steps`, `mask`...).
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A config file does not parse.
    #[error("bad config {path}: {source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The cause, with the field.
        source: serde_json::Error,
    },
    /// The tokenizer files are missing or malformed.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer folder or file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Pickle weights (.ckpt, .bin, .pt, .pth) can run code when loaded; this worker never loads them.
    #[error("{path} is a pickle file; only safetensors weights are loaded (convert it to .safetensors)")]
    Pickle {
        /// The refused file.
        path: PathBuf,
    },
    /// The files are not a model layout this worker knows.
    #[error("cannot load {path}: {message}")]
    Layout {
        /// The model file or folder.
        path: PathBuf,
        /// What is missing or unexpected.
        message: String,
    },
    /// The catalog refused the model (unknown, not downloaded, incompatible).
    #[error(transparent)]
    Catalog(#[from] catalog::resolve::ResolveError),
    /// A scheduler could not be built or stepped.
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    /// An image could not be decoded or encoded.
    #[error("image {what}: {message}")]
    Image {
        /// Which image (`init_image`, `mask`, `output`).
        what: &'static str,
        /// The decoder's or encoder's message.
        message: String,
    },
    /// The caller stopped the job (a client left, or a shutdown).
    #[error("cancelled")]
    Cancelled,
    /// A tensor operation failed (shapes, devices, weights).
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

/// Shorthand for this crate's results.
pub type Result<T> = std::result::Result<T, SdError>;

impl SdError {
    /// A validation error for a request field.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        SdError::Invalid {
            field,
            message: message.into(),
        }
    }

    /// An I/O error on a path.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        SdError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A tokenizer error on a path.
    pub fn tokenizer(path: &Path, error: impl std::fmt::Display) -> Self {
        SdError::Tokenizer {
            path: path.to_path_buf(),
            message: error.to_string(),
        }
    }

    /// A layout error on a path.
    pub fn layout(path: &Path, message: impl Into<String>) -> Self {
        SdError::Layout {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// Whether the caller's input is at fault (HTTP 400) rather than the worker: a bad field, an image
    /// that does not decode, or a pickle LoRA or embedding the request named.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            SdError::Invalid { .. } | SdError::Image { .. } | SdError::Pickle { .. }
        )
    }
}
