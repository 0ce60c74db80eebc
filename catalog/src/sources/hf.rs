//! The HuggingFace Hub client: model info, the config files it plans, and the GGUF header by Range
//! requests, fed to [`crate::ingest::hf`]. Configured by a builder with the endpoint and token.

use artifacts_contract::{CatalogId, ModelEntry};
use chrono::{DateTime, Utc};

use super::http::{HttpClient, HttpError};
use super::{ClientBuilder, SourceClient, SourceError};
use crate::ingest::gguf::{self, GgufHeader};
use crate::ingest::hf::{self as ingest_hf, ModelInfo};
use crate::ingest::hf_files::FetchedFiles;

/// Largest config file fetched whole (tokenizer configs with long templates run to a few hundred KB).
const CONFIG_LIMIT: u64 = 16 << 20;
/// Largest GGUF header read over HTTP.
const GGUF_HEADER_LIMIT: u64 = 256 << 20;

/// A client of one HuggingFace Hub.
#[derive(Debug, Clone)]
pub struct HfClient {
    endpoint: String,
    http: HttpClient,
}

fn repo_and_revision(id: &CatalogId) -> Result<(&str, Option<&str>), SourceError> {
    match id {
        CatalogId::HuggingFace { repo, revision, .. } => Ok((repo, revision.as_deref())),
        other => Err(SourceError::WrongSource(other.to_string())),
    }
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

    /// The model info of an id's repo at its revision.
    pub fn model_info(&self, id: &CatalogId) -> Result<ModelInfo, SourceError> {
        let (repo, revision) = repo_and_revision(id)?;
        let url = ingest_hf::model_info_url(&self.endpoint, repo, revision);
        let bytes = self.http.get_json(&url).map_err(|e| match e {
            HttpError::NotFound { .. } => SourceError::NotFound(format!(
                "no model {id} on the Hub{}",
                revision.map(|r| format!(" at revision {r}")).unwrap_or_default()
            )),
            other => other.into(),
        })?;
        Ok(ingest_hf::parse_model_info(&bytes)?)
    }

    /// Reads a GGUF file's header with Range requests, growing the range until the header fits.
    pub fn read_gguf_header(&self, url: &str) -> Result<GgufHeader, SourceError> {
        let mut size = gguf::FIRST_READ_BYTES;
        loop {
            let bytes = self.http.get_prefix(url, size)?;
            match gguf::parse_header(&bytes) {
                Ok(h) => return Ok(h),
                Err(e) => match gguf::next_read_size(&e) {
                    // A short answer means the file itself ends there: the header is truncated.
                    Some(next) if (bytes.len() as u64) == size && next <= GGUF_HEADER_LIMIT => size = next,
                    _ => return Err(crate::ingest::IngestError::from(e).into()),
                },
            }
        }
    }

    /// Fetches everything needed to describe an id (model info, config files, GGUF header) and builds
    /// the entry, without downloading weights.
    pub fn fetch_entry(&self, id: &CatalogId, now: DateTime<Utc>) -> Result<ModelEntry, SourceError> {
        let (repo, revision) = repo_and_revision(id)?;
        let info = self.model_info(id)?;
        let plan = ingest_hf::plan_fetch(id, &info)?;
        let rev = info.sha.as_deref().or(revision).unwrap_or("main");
        let gated = !matches!(
            info.gated,
            serde_json::Value::Bool(false) | serde_json::Value::Null
        );
        let denied = |e: HttpError| match e {
            HttpError::Denied { .. } if gated => SourceError::Gated(id.to_string(), repo.to_string()),
            other => other.into(),
        };
        let mut files = FetchedFiles::new();
        for name in &plan.metadata_files {
            let url = self.file_url(repo, rev, name);
            let bytes = self.http.get_bytes(&url, None, CONFIG_LIMIT).map_err(denied)?;
            files.insert(name.clone(), bytes);
        }
        let header = match &plan.gguf_file {
            Some(file) => Some(self.read_gguf_header(&self.file_url(repo, rev, file)).map_err(
                |e| match e {
                    SourceError::Http(h) => denied(h),
                    other => other,
                },
            )?),
            None => None,
        };
        Ok(ingest_hf::build_entry(id, &info, &files, header.as_ref(), now)?)
    }

    /// Searches the Hub.
    pub fn search(&self, text: &str, limit: u32, now: DateTime<Utc>) -> Result<Vec<ModelEntry>, SourceError> {
        let bytes = self
            .http
            .get_json(&ingest_hf::search_url(&self.endpoint, text, limit))?;
        Ok(ingest_hf::parse_search(&bytes, now)?)
    }
}
