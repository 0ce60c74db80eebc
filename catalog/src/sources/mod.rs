//! Sources: the I/O side of ingestion. Each source client fetches what [`crate::ingest`] asks for and
//! hands the bytes back; one client type per source, configured by a builder with endpoint and token
//! (the command reads `HF_ENDPOINT`, `HF_TOKEN`, `CIVITAI_ENDPOINT`, `CIVITAI_TOKEN`; nothing below it
//! reads the environment, stores or prints a token).

pub mod civitai;
pub mod hf;
pub mod http;
pub mod local;

use std::path::PathBuf;

use crate::ingest::IngestError;
use http::HttpError;

/// Why a source could not describe a model.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The request failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The answer could not be read into an entry.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The source has no such model.
    #[error("{0}")]
    NotFound(String),
    /// A gated repo refused the files.
    #[error(
        "{0} is gated: accept its terms at https://huggingface.co/{1} and set HF_TOKEN to a token with access"
    )]
    Gated(String, String),
    /// A local file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A client got another source's id.
    #[error("{0} does not belong to this source")]
    WrongSource(String),
}

impl SourceError {
    /// An I/O error naming the file.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SourceError::Io {
            path: path.into(),
            source,
        }
    }
}
