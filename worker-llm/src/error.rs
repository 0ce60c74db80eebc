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
    /// The prompt plus the requested tokens need more KV cache than the server's whole pool holds.
    #[error(
        "the prompt plus max_tokens need {needed_tokens} tokens of KV cache, but this server's cache \
         holds {capacity_tokens} (raise --kv-cache-mib, or ask for fewer tokens)"
    )]
    KvCacheTooSmall {
        /// Prompt tokens plus `max_tokens`.
        needed_tokens: usize,
        /// Positions the pool holds.
        capacity_tokens: usize,
    },
    /// A request's parameters are out of range (negative temperature, top_p above 1...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// An invariant of this crate broke (a bug, not the client's doing): answered as a 500.
    #[error("internal error: {0}")]
    Internal(String),
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
    /// Candle failed while loading weights or running the model (its backtrace, if it captured one,
    /// left out: a message for users).
    #[error("candle: {0}")]
    Candle(candle_core::Error),
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

impl From<candle_core::Error> for LlmError {
    fn from(e: candle_core::Error) -> Self {
        LlmError::Candle(without_backtrace(e))
    }
}

/// A Candle error without the backtrace Candle attaches when `RUST_BACKTRACE` is set (its `Display`
/// prints it, which would put a backtrace in every message a user or an HTTP client reads).
pub(crate) fn without_backtrace(e: candle_core::Error) -> candle_core::Error {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => without_backtrace(*inner),
        candle_core::Error::Context { inner, context } => candle_core::Error::Context {
            inner: Box::new(without_backtrace(*inner)),
            context,
        },
        e => e,
    }
}

/// The crate's result type.
pub type Result<T, E = LlmError> = std::result::Result<T, E>;
