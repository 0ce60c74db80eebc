//! The HuggingFace Hub client: model info, the config files it plans, and the GGUF header by Range
//! requests, fed to [`crate::ingest::hf`]. Configured by a builder with the endpoint and token.

use artifacts_contract::{CatalogId, ModelEntry};
use chrono::{DateTime, Utc};

use super::http::HttpClient;
use super::{ClientBuilder, SourceClient, SourceError};
use crate::ingest::fetch::{GgufRead, HfFetch, Request, run_blocking};
use crate::ingest::gguf::GgufHeader;
use crate::ingest::hf as ingest_hf;

/// A client of one HuggingFace Hub.
#[derive(Debug, Clone)]
pub struct HfClient {
    endpoint: String,
    http: HttpClient,
}

impl SourceClient for HfClient {
    const PUBLIC_ENDPOINT: &'static str = ingest_hf::PUBLIC_ENDPOINT;
    const DENIED_HINT: &'static str = "; set HF_TOKEN to a HuggingFace token with access to this repository";

    fn from_parts(endpoint: String, http: HttpClient) -> Self {
        HfClient { endpoint, http }
    }
}

impl HfClient {
    /// A builder with the public endpoint and no token.
    pub fn builder() -> ClientBuilder<HfClient> {
        ClientBuilder::default()
    }

    /// The HTTP client (for downloads).
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// Replaces the HTTP client (tests shorten retry waits).
    pub fn with_http(mut self, http: HttpClient) -> Self {
        self.http = http;
        self
    }

    /// The download URL of a file.
    pub fn file_url(&self, repo: &str, revision: &str, path: &str) -> String {
        ingest_hf::file_url(&self.endpoint, repo, revision, path)
    }

    /// Performs one request a [`crate::ingest::fetch`] machine asks for.
    fn perform(&self, request: Request) -> Result<Vec<u8>, SourceError> {
        let Request {
            url,
            range,
            limit,
            json,
        } = request;
        Ok(match range {
            Some((0, end)) => self.http.get_prefix(&url, end + 1)?,
            Some((start, end)) => self.http.get_bytes(&url, Some((start, Some(end))), limit)?,
            None if json => self.http.get_json_limited(&url, limit)?,
            None => self.http.get_bytes(&url, None, limit)?,
        })
    }

    /// Reads a GGUF file's header with Range requests, growing the range until the header fits.
    pub fn read_gguf_header(&self, url: &str) -> Result<GgufHeader, SourceError> {
        run_blocking(GgufRead::new(url.to_string()), |r| self.perform(r))
    }

    /// Fetches everything needed to describe an id (model info, config files, GGUF header) and builds
    /// the entry, without downloading weights; the sequence is [`HfFetch`]'s.
    pub fn fetch_entry(&self, id: &CatalogId, now: DateTime<Utc>) -> Result<ModelEntry, SourceError> {
        run_blocking(HfFetch::new(&self.endpoint, id, now)?, |r| self.perform(r))
    }

    /// Searches the Hub.
    pub fn search(&self, text: &str, limit: u32, now: DateTime<Utc>) -> Result<Vec<ModelEntry>, SourceError> {
        let bytes = self
            .http
            .get_json(&ingest_hf::search_url(&self.endpoint, text, limit))?;
        Ok(ingest_hf::parse_search(&bytes, now)?)
    }
}
