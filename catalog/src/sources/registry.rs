//! The registry of sources: each source is a module whose client implements [`Source`], registered by
//! one line in [`registry`]. The command and [`crate::ops`] find the source of an id here, by its
//! scheme, instead of matching on every source.

use artifacts_contract::{CatalogId, ModelEntry};
use chrono::{DateTime, Utc};

use super::SourceError;
use super::civitai::CivitaiClient;
use super::hf::HfClient;

/// How to describe an id: the choices `catalog add` passes down.
#[derive(Debug, Clone, Copy)]
pub struct Describe {
    /// Accept pickle weights instead of refusing them.
    pub allow_pickle: bool,
    /// The time to stamp the entry with (ingestion never reads the clock).
    pub now: DateTime<Utc>,
}

/// A place models come from.
pub trait Source: std::fmt::Debug + Sync {
    /// The catalog-id scheme it answers for (`hf`, `civitai`, `file`).
    fn scheme(&self) -> &'static str;

    /// Describes an id of this scheme without downloading its weights.
    fn describe(&self, id: &CatalogId, how: &Describe) -> Result<ModelEntry, SourceError>;
}

/// Files and folders on this machine (`file:` ids).
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalFiles;

impl Source for LocalFiles {
    fn scheme(&self) -> &'static str {
        "file"
    }

    fn describe(&self, id: &CatalogId, how: &Describe) -> Result<ModelEntry, SourceError> {
        match id {
            CatalogId::File { path } => super::local::entry_from_path(std::path::Path::new(path), how.now),
            other => Err(SourceError::WrongSource(other.to_string())),
        }
    }
}

impl Source for HfClient {
    fn scheme(&self) -> &'static str {
        "hf"
    }

    fn describe(&self, id: &CatalogId, how: &Describe) -> Result<ModelEntry, SourceError> {
        self.fetch_entry(id, how.now)
    }
}

impl Source for CivitaiClient {
    fn scheme(&self) -> &'static str {
        "civitai"
    }

    fn describe(&self, id: &CatalogId, how: &Describe) -> Result<ModelEntry, SourceError> {
        self.fetch_entry(id, how.allow_pickle, how.now)
    }
}

/// Every source, given the configured clients; a new source is one line here.
pub fn registry<'a>(hf: &'a HfClient, civitai: &'a CivitaiClient) -> [&'a dyn Source; 3] {
    [hf, civitai, &LocalFiles]
}

/// The source of an id, by its scheme.
pub fn source_for<'a>(sources: &[&'a dyn Source], id: &CatalogId) -> Result<&'a dyn Source, SourceError> {
    sources
        .iter()
        .copied()
        .find(|s| s.scheme() == id.scheme())
        .ok_or_else(|| SourceError::WrongSource(id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_scheme_has_exactly_one_source() {
        let (hf, civitai) = (HfClient::builder().build(), CivitaiClient::builder().build());
        let sources = registry(&hf, &civitai);
        for id in ["hf:o/r", "civitai:1", "file:/x.gguf"] {
            let id: CatalogId = id.parse().unwrap();
            let found: Vec<_> = sources.iter().filter(|s| s.scheme() == id.scheme()).collect();
            assert_eq!(found.len(), 1, "{id}");
            assert_eq!(source_for(&sources, &id).unwrap().scheme(), id.scheme());
        }
    }

    #[test]
    fn a_source_refuses_another_sources_id() {
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let how = Describe {
            allow_pickle: false,
            now,
        };
        let err = LocalFiles.describe(&"hf:o/r".parse().unwrap(), &how).unwrap_err();
        assert!(matches!(err, SourceError::WrongSource(_)), "{err}");
    }
}
