//! The CivitAI client: models, versions and lookups by hash, fed to [`crate::ingest::civitai`].
//! Configured by a builder with the endpoint and token.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use artifacts_contract::{CatalogId, ModelEntry, ModelFile};
use chrono::{DateTime, Utc};

use super::http::{HttpClient, HttpError};
use super::registry::{Describe, Registration, Settings, Source};
use super::{ClientBuilder, SourceClient, SourceError};
use crate::download::{DownloadError, transfer};
use crate::ingest::civitai as ingest_civitai;
use crate::ingest::{NameKind, check_name};

/// A client of one CivitAI.
#[derive(Debug, Clone)]
pub struct CivitaiClient {
    endpoint: String,
    http: HttpClient,
}

impl SourceClient for CivitaiClient {
    const PUBLIC_ENDPOINT: &'static str = ingest_civitai::PUBLIC_ENDPOINT;
    const DENIED_HINT: &'static str = "; set CIVITAI_TOKEN to a CivitAI API key that may download it";

    fn from_parts(endpoint: String, http: HttpClient) -> Self {
        CivitaiClient { endpoint, http }
    }
}

impl CivitaiClient {
    /// A builder with the public endpoint and no token.
    pub fn builder() -> ClientBuilder<CivitaiClient> {
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

    fn json(&self, url: &str, missing: impl FnOnce() -> String) -> Result<Vec<u8>, SourceError> {
        self.http.get_json(url).map_err(|e| match e {
            HttpError::NotFound { .. } => SourceError::NotFound(missing()),
            other => other.into(),
        })
    }

    /// Describes `civitai:MODEL[@VERSION]`; pickle weights are refused unless `allow_pickle`.
    pub fn fetch_entry(
        &self,
        id: &CatalogId,
        allow_pickle: bool,
        now: DateTime<Utc>,
    ) -> Result<ModelEntry, SourceError> {
        let CatalogId::CivitAi { model, .. } = id else {
            return Err(SourceError::WrongSource(id.to_string()));
        };
        let bytes = self.json(&ingest_civitai::model_url(&self.endpoint, *model), || {
            format!("no model {model} on CivitAI")
        })?;
        let parsed = ingest_civitai::parse_model(&bytes)?;
        Ok(ingest_civitai::entry_from_model(id, &parsed, allow_pickle, now)?)
    }

    /// One entry per version of a model, newest first (a version picker); a version that cannot be
    /// described is left out unless none can. Pickle weights are described, not refused.
    pub fn fetch_versions(&self, model: u64, now: DateTime<Utc>) -> Result<Vec<ModelEntry>, SourceError> {
        let bytes = self.json(&ingest_civitai::model_url(&self.endpoint, model), || {
            format!("no model {model} on CivitAI")
        })?;
        let parsed = ingest_civitai::parse_model(&bytes)?;
        let mut entries = Vec::new();
        let mut first_error = None;
        for version in &parsed.model_versions {
            let id = CatalogId::CivitAi {
                model: parsed.id,
                version: Some(version.id),
            };
            match ingest_civitai::entry_from_model(&id, &parsed, true, now) {
                Ok(e) => entries.push(e),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if entries.is_empty() => Err(e.into()),
            _ => Ok(entries),
        }
    }

    /// Describes one version by its id alone.
    pub fn fetch_version(
        &self,
        version: u64,
        allow_pickle: bool,
        now: DateTime<Utc>,
    ) -> Result<ModelEntry, SourceError> {
        let bytes = self.json(&ingest_civitai::version_url(&self.endpoint, version), || {
            format!("no model version {version} on CivitAI")
        })?;
        Ok(ingest_civitai::entry_from_version_json(
            &bytes,
            allow_pickle,
            now,
        )?)
    }

    /// Looks a file up by its SHA-256; `None` when CivitAI does not know it.
    pub fn identify(&self, sha256: &str, now: DateTime<Utc>) -> Result<Option<ModelEntry>, SourceError> {
        match self
            .http
            .get_json(&ingest_civitai::by_hash_url(&self.endpoint, sha256))
        {
            Ok(bytes) => Ok(Some(ingest_civitai::entry_from_version_json(&bytes, true, now)?)),
            Err(HttpError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Searches CivitAI.
    pub fn search(&self, text: &str, limit: u32, now: DateTime<Utc>) -> Result<Vec<ModelEntry>, SourceError> {
        let bytes = self
            .http
            .get_json(&ingest_civitai::search_url(&self.endpoint, text, limit))?;
        Ok(ingest_civitai::parse_models_list(&bytes, now)?)
    }
}

/// `civitai:` ids, registered in [`super::registry::REGISTRY`]: `CIVITAI_ENDPOINT` and `CIVITAI_TOKEN`
/// configure the client; files go under the catalog home.
pub const REGISTRATION: Registration = Registration {
    scheme: "civitai",
    env: &["CIVITAI_ENDPOINT", "CIVITAI_TOKEN"],
    build: |settings: &Settings| {
        Arc::new(
            CivitaiClient::builder()
                .endpoint(settings.var("CIVITAI_ENDPOINT"))
                .token(settings.var("CIVITAI_TOKEN"))
                .stall_timeout(settings.stall_timeout())
                .build(),
        )
    },
};

impl Source for CivitaiClient {
    fn scheme(&self) -> &'static str {
        "civitai"
    }

    fn describe(&self, id: &CatalogId, how: &Describe) -> Result<ModelEntry, SourceError> {
        self.fetch_entry(id, how.allow_pickle, how.now)
    }

    fn search(
        &self,
        text: &str,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Option<Result<Vec<ModelEntry>, SourceError>> {
        Some(CivitaiClient::search(self, text, limit, now))
    }

    fn versions(&self, id: &CatalogId, now: DateTime<Utc>) -> Option<Result<Vec<ModelEntry>, SourceError>> {
        match id {
            CatalogId::CivitAi { model, .. } => Some(self.fetch_versions(*model, now)),
            other => Some(Err(SourceError::WrongSource(other.to_string()))),
        }
    }

    fn identify(&self, sha256: &str, now: DateTime<Utc>) -> Option<Result<Option<ModelEntry>, SourceError>> {
        Some(CivitaiClient::identify(self, sha256, now))
    }

    /// `CATALOG_HOME/files/civitai/MODEL/VERSION` (the version id checked: it came from the network).
    fn entry_folder(
        &self,
        entry: &ModelEntry,
        catalog_home: &Path,
    ) -> Result<Option<PathBuf>, DownloadError> {
        let CatalogId::CivitAi { model, .. } = &entry.id else {
            return Err(DownloadError::NoSource(entry.id.to_string()));
        };
        let version = entry.revision.as_deref().unwrap_or("latest");
        check_name(NameKind::VersionId, version)?;
        Ok(Some(
            catalog_home
                .join("files")
                .join("civitai")
                .join(model.to_string())
                .join(version),
        ))
    }

    fn fetch_file(
        &self,
        entry: &ModelEntry,
        file: &ModelFile,
        target: &Path,
        report: &mut dyn FnMut(u64),
    ) -> Result<(), DownloadError> {
        let url = file
            .url
            .as_deref()
            .ok_or_else(|| DownloadError::NoSource(entry.id.to_string()))?;
        transfer::fetch_verified(&self.http, url, file, target, report)
    }
}
