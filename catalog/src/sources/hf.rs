//! The HuggingFace Hub client: model info, the config files it plans, and the GGUF header by Range
//! requests, fed to [`crate::ingest::hf`]. Configured by a builder with the endpoint and token. As a
//! [`Source`] ([`HfSource`]) its files go into the HuggingFace cache layout under `HF_HOME`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use artifacts_contract::{CatalogId, ModelEntry, ModelFile};
use chrono::{DateTime, Utc};

use super::http::HttpClient;
use super::registry::{Describe, Registration, Settings, Source};
use super::{ClientBuilder, SourceClient, SourceError};
use crate::download::{DownloadError, hf_cache};
use crate::ingest::fetch::{GgufRead, HfFetch, Request, run_blocking};
use crate::ingest::gguf::GgufHeader;
use crate::ingest::hf as ingest_hf;
use crate::ingest::{NameKind, check_name};

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

/// `hf:` ids, registered in [`super::registry::REGISTRY`]: `HF_ENDPOINT` and `HF_TOKEN` configure the
/// client, and files go under `HF_HOME` (else `$HOME/.cache/huggingface`) as huggingface_hub lays them
/// out, so the Python tools share them.
pub const REGISTRATION: Registration = Registration {
    scheme: "hf",
    env: &["HF_ENDPOINT", "HF_TOKEN", "HF_HOME", "HOME"],
    build: |settings| Arc::new(HfSource::new(settings)),
};

/// The Hub as a source: its client and the HF cache its files go into.
#[derive(Debug, Clone)]
pub struct HfSource {
    client: HfClient,
    hf_home: PathBuf,
}

impl HfSource {
    /// The source configured by `HF_ENDPOINT`, `HF_TOKEN` and `HF_HOME` (else `$HOME/.cache/huggingface`).
    pub fn new(settings: &Settings) -> Self {
        let hf_home = match (settings.var("HF_HOME"), settings.var("HOME")) {
            (Some(dir), _) => PathBuf::from(dir),
            (None, Some(home)) => Path::new(&home).join(".cache").join("huggingface"),
            (None, None) => PathBuf::from(".cache/huggingface"),
        };
        let client = HfClient::builder()
            .endpoint(settings.var("HF_ENDPOINT"))
            .token(settings.var("HF_TOKEN"))
            .stall_timeout(settings.stall_timeout())
            .build();
        HfSource { client, hf_home }
    }

    /// The client.
    pub fn client(&self) -> &HfClient {
        &self.client
    }
}

impl Source for HfSource {
    fn scheme(&self) -> &'static str {
        "hf"
    }

    fn describe(&self, id: &CatalogId, how: &Describe) -> Result<ModelEntry, SourceError> {
        match id {
            CatalogId::HuggingFace { .. } => self.client.fetch_entry(id, how.now),
            other => Err(SourceError::WrongSource(other.to_string())),
        }
    }

    fn search(
        &self,
        text: &str,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Option<Result<Vec<ModelEntry>, SourceError>> {
        Some(self.client.search(text, limit, now))
    }

    /// `HF_HOME/hub/models--org--name/snapshots/REV`, REV the resolved commit (checked: it came from the
    /// network), else the branch or tag asked for.
    fn entry_folder(
        &self,
        entry: &ModelEntry,
        _catalog_home: &Path,
    ) -> Result<Option<PathBuf>, DownloadError> {
        let CatalogId::HuggingFace { repo, revision, .. } = &entry.id else {
            return Err(DownloadError::NoSource(entry.id.to_string()));
        };
        if let Some(rev) = revision {
            check_name(NameKind::Revision, rev)?;
        }
        let rev = match entry.revision.as_deref() {
            Some(sha) => {
                check_name(NameKind::CommitSha, sha)?;
                sha
            }
            None => revision.as_deref().unwrap_or("main"),
        };
        Ok(Some(
            hf_cache::hf_repo_dir(&self.hf_home, repo)
                .join("snapshots")
                .join(rev),
        ))
    }

    fn fetch_file(
        &self,
        entry: &ModelEntry,
        file: &ModelFile,
        target: &Path,
        report: &mut dyn FnMut(u64),
    ) -> Result<(), DownloadError> {
        let CatalogId::HuggingFace { repo, revision, .. } = &entry.id else {
            return Err(DownloadError::NoSource(entry.id.to_string()));
        };
        let url = match &file.url {
            Some(url) => url.clone(),
            None => {
                let rev = entry
                    .revision
                    .as_deref()
                    .or(revision.as_deref())
                    .unwrap_or("main");
                self.client.file_url(repo, rev, &file.path)
            }
        };
        hf_cache::fetch_into_hf_cache(
            &self.hf_home,
            repo,
            &url,
            file,
            target,
            self.client.http(),
            report,
        )
    }

    /// Records `refs/BRANCH` when a branch or tag was resolved to a commit.
    fn finish(&self, entry: &ModelEntry) -> Result<(), DownloadError> {
        if let (
            CatalogId::HuggingFace {
                repo,
                revision: Some(rev),
                ..
            },
            Some(sha),
        ) = (&entry.id, &entry.revision)
            && rev != sha
        {
            hf_cache::write_ref(&self.hf_home, repo, rev, sha)?;
        }
        Ok(())
    }
}
