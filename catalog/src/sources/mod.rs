//! Sources: the I/O side of ingestion, listed by id scheme in [`registry`]. Each source client fetches
//! what [`crate::ingest`] asks for and hands the bytes back; one client type per source, configured by a builder with endpoint and token
//! (the command reads `HF_ENDPOINT`, `HF_TOKEN`, `CIVITAI_ENDPOINT`, `CIVITAI_TOKEN`; nothing below it
//! reads the environment, stores or prints a token).

pub mod civitai;
pub mod hf;
pub mod http;
pub mod local;
pub mod registry;

use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use crate::ingest::IngestError;
use http::{HttpClient, HttpError};

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
    /// A local file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The source cannot do what was asked (search, versions...).
    #[error("not supported by this source: {0}")]
    Unsupported(String),
    /// A client got another source's id.
    #[error("{0} does not belong to this source")]
    WrongSource(String),
}

impl crate::ingest::fetch::HttpStatus for SourceError {
    fn http_status(&self) -> Option<u16> {
        match self {
            SourceError::Http(e) => e.status(),
            _ => None,
        }
    }
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

/// A source's client, built from an endpoint and a token by [`ClientBuilder`].
pub trait SourceClient: Sized {
    /// The public endpoint, used when none is configured.
    const PUBLIC_ENDPOINT: &'static str;
    /// What a 401 or 403 tells the user to do (which token to set).
    const DENIED_HINT: &'static str;
    /// The client for an endpoint (no trailing slash) and an HTTP client carrying the token.
    fn from_parts(endpoint: String, http: HttpClient) -> Self;
}

/// Configures a source client with its endpoint and token, as the command reads them from the
/// environment; tests point it at a loopback server.
#[derive(Debug, Clone)]
pub struct ClientBuilder<C> {
    endpoint: Option<String>,
    token: Option<String>,
    stall_timeout: Option<Duration>,
    client: PhantomData<C>,
}

impl<C> Default for ClientBuilder<C> {
    fn default() -> Self {
        ClientBuilder {
            endpoint: None,
            token: None,
            stall_timeout: None,
            client: PhantomData,
        }
    }
}

impl<C: SourceClient> ClientBuilder<C> {
    /// The server to talk to (`HF_ENDPOINT`, `CIVITAI_ENDPOINT`); the public one when unset or empty.
    pub fn endpoint(mut self, endpoint: Option<String>) -> Self {
        self.endpoint = endpoint.filter(|e| !e.is_empty());
        self
    }

    /// The access token (`HF_TOKEN`, `CIVITAI_TOKEN`); sent, never stored or shown.
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// How long a download may receive nothing before it fails (resumable); a minute when unset.
    pub fn stall_timeout(mut self, stall: Option<Duration>) -> Self {
        self.stall_timeout = stall;
        self
    }

    /// Builds the client.
    pub fn build(self) -> C {
        let endpoint = self.endpoint.unwrap_or_else(|| C::PUBLIC_ENDPOINT.to_string());
        let mut http = HttpClient::new(self.token, C::DENIED_HINT);
        if let Some(stall) = self.stall_timeout {
            http = http.with_stall_timeout(stall);
        }
        C::from_parts(endpoint.trim_end_matches('/').to_string(), http)
    }
}
