//! Typed errors of the engine: each names what went wrong and, where there is one, what to do about it.

use std::path::PathBuf;

/// Everything loading or generation can fail with; the HTTP layer maps these to status codes.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The catalog has no such model, has not downloaded it, or says this worker cannot run it; the
    /// message names the `catalog` command that fixes it.
    #[error(transparent)]
    Resolve(#[from] catalog::resolve::ResolveError),
    /// The prompt plus the requested tokens do not fit the model's context window.
    #[error(
        "the prompt has {prompt_tokens} tokens and {requested_tokens} more were requested, \
         but the model's context length is {context_length} tokens"
    )]
    ContextOverflow {
        /// Tokens in the prompt after the chat template and tokenization.
        prompt_tokens: usize,
        /// `max_tokens` of the request.
        requested_tokens: usize,
        /// The model's context window.
        context_length: usize,
    },
    /// A request's parameters are out of range (negative temperature, top_p above 1...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The prompt is empty after tokenization: there is nothing to continue from.
    #[error("the prompt is empty: give some text or messages")]
    EmptyPrompt,
    /// The model has no chat template and chat messages were given.
    #[error("the model has no chat template: send a plain prompt instead of messages")]
    NoChatTemplate,
    /// The chat template failed to parse or render (including `raise_exception` from the template).
    #[error("chat template: {0}")]
    Template(String),
    /// A file or folder that should hold a model does not.
    #[error("{path}: {reason}")]
    ModelFiles {
        /// The path looked at.
        path: PathBuf,
        /// What is missing or wrong there.
        reason: String,
    },
    /// The weights are of an architecture no registered loader handles.
    #[error("unsupported architecture `{name}` in {format} weights (supported: {supported})")]
    UnsupportedArchitecture {
        /// The name found in the files (`general.architecture` or `model_type`).
        name: String,
        /// `gguf` or `safetensors`.
        format: String,
        /// Names the registry knows for that format.
        supported: String,
    },
    /// The tokenizer could not be built or failed on input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A config file (`config.json`, `generation_config.json`...) is not what the loader expects.
    #[error("{file}: {reason}")]
    Config {
        /// The file name.
        file: String,
        /// What is wrong in it.
        reason: String,
    },
    /// Candle failed while loading weights or running the model.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// Reading a model file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl LlmError {
    /// Shorthand for a tokenizer error from any displayable cause.
    pub(crate) fn tokenizer(e: impl std::fmt::Display) -> Self {
        LlmError::Tokenizer(e.to_string())
    }

    /// Shorthand for an I/O error on a path.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LlmError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = LlmError> = std::result::Result<T, E>;
