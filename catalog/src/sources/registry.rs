//! The registry of sources: each source is a module whose client implements [`Source`] (describing,
//! and optionally searching, listing versions, looking files up by hash, and where and how its files
//! are downloaded) and exports a [`Registration`]; [`REGISTRY`] lists them, one line each. The command,
//! [`crate::ops`], the downloader and `catalog serve` find the source of an id here, by its scheme,
//! instead of matching on every source.
//!
//! Adding a source (ModelScope, Ollama's registry, a plain URL) is one module plus one line in
//! [`REGISTRY`]; only an id of a new shape also needs its variant in the contract's `CatalogId`, the
//! one truth of what ids parse.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use artifacts_contract::{CatalogId, ModelEntry, ModelFile};
use chrono::{DateTime, Utc};

use super::{SourceError, civitai, hf, local};
use crate::download::DownloadError;

/// Every source, in the order searches and lookups by hash ask them; a new source is one line here.
pub const REGISTRY: &[Registration] = &[hf::REGISTRATION, civitai::REGISTRATION, local::REGISTRATION];

/// One registered source: its scheme, the environment variables it reads, and how it is built.
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    /// The catalog-id scheme it answers for (`hf`, `civitai`, `file`).
    pub scheme: &'static str,
    /// The environment variables it is configured by (the command reads them; nothing below it does).
    pub env: &'static [&'static str],
    /// Builds the source from what the command read.
    pub build: fn(&Settings) -> Arc<dyn Source>,
}

/// What the command read from its environment for the registered sources, handed to each source's
/// builder: tests and `catalog serve` build the same way with their own values.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    vars: BTreeMap<String, String>,
    stall_timeout: Option<Duration>,
}

impl Settings {
    /// Reads every variable a registered source declares through `lookup` (empty values count as
    /// unset).
    pub fn read(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let mut settings = Settings::default();
        for name in REGISTRY.iter().flat_map(|r| r.env) {
            if let Some(value) = lookup(name) {
                settings = settings.with(name, value);
            }
        }
        settings
    }

    /// Sets one variable (`HF_ENDPOINT`, `CIVITAI_TOKEN`, `HF_HOME`...).
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        let value = value.into();
        if !value.is_empty() {
            self.vars.insert(name.to_string(), value);
        }
        self
    }

    /// How long a download may receive nothing before it fails (resumable); a minute when unset.
    pub fn with_stall_timeout(mut self, stall: Option<Duration>) -> Self {
        self.stall_timeout = stall;
        self
    }

    /// A variable's value, if set.
    pub fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    /// The stall timeout, if set.
    pub fn stall_timeout(&self) -> Option<Duration> {
        self.stall_timeout
    }
}

/// How to describe an id: the choices `catalog add` passes down.
#[derive(Debug, Clone, Copy)]
pub struct Describe {
    /// Accept pickle weights instead of refusing them.
    pub allow_pickle: bool,
    /// The time to stamp the entry with (ingestion never reads the clock).
    pub now: DateTime<Utc>,
}

/// A place models come from. Only [`Source::scheme`], [`Source::describe`] and
/// [`Source::entry_folder`] are required; the rest are capabilities a source may lack.
pub trait Source: std::fmt::Debug + Send + Sync {
    /// The catalog-id scheme it answers for.
    fn scheme(&self) -> &'static str;

    /// Describes an id of this scheme without downloading its weights.
    fn describe(&self, id: &CatalogId, how: &Describe) -> Result<ModelEntry, SourceError>;

    /// Searches by text; `None` when the source has no search.
    fn search(
        &self,
        _text: &str,
        _limit: u32,
        _now: DateTime<Utc>,
    ) -> Option<Result<Vec<ModelEntry>, SourceError>> {
        None
    }

    /// Every version of a model, newest first; `None` when the source has no versions to pick from.
    fn versions(&self, _id: &CatalogId, _now: DateTime<Utc>) -> Option<Result<Vec<ModelEntry>, SourceError>> {
        None
    }

    /// What the source knows a file with this SHA-256 as; `None` when it cannot look files up.
    fn identify(
        &self,
        _sha256: &str,
        _now: DateTime<Utc>,
    ) -> Option<Result<Option<ModelEntry>, SourceError>> {
        None
    }

    /// The folder an entry's files live in once downloaded (under `catalog_home` unless the source
    /// has a layout of its own); `None` when the files stay where they are. Names in it that came
    /// from the network are checked here.
    fn entry_folder(&self, entry: &ModelEntry, catalog_home: &Path)
    -> Result<Option<PathBuf>, DownloadError>;

    /// Fetches one file of an entry to `target` (inside its folder), verified, reporting the bytes
    /// on disk.
    fn fetch_file(
        &self,
        entry: &ModelEntry,
        _file: &ModelFile,
        _target: &Path,
        _report: &mut dyn FnMut(u64),
    ) -> Result<(), DownloadError> {
        Err(DownloadError::NoSource(entry.id.to_string()))
    }

    /// Runs once every file of an entry is in place (the HF cache records the branch's commit).
    fn finish(&self, _entry: &ModelEntry) -> Result<(), DownloadError> {
        Ok(())
    }
}

/// Every registered source, built from the same settings; cheap to clone.
#[derive(Debug, Clone)]
pub struct Sources {
    list: Vec<Arc<dyn Source>>,
}

impl Sources {
    /// Builds every source in [`REGISTRY`].
    pub fn new(settings: &Settings) -> Self {
        Sources {
            list: REGISTRY.iter().map(|r| (r.build)(settings)).collect(),
        }
    }

    /// The source of a scheme, if one is registered.
    pub fn get(&self, scheme: &str) -> Option<&dyn Source> {
        self.list
            .iter()
            .find(|s| s.scheme() == scheme)
            .map(|s| s.as_ref())
    }

    /// The source of an id, by its scheme.
    pub fn for_id(&self, id: &CatalogId) -> Result<&dyn Source, SourceError> {
        self.get(id.scheme())
            .ok_or_else(|| SourceError::WrongSource(id.to_string()))
    }

    /// Every source, in registry order.
    pub fn iter(&self) -> impl Iterator<Item = &dyn Source> {
        self.list.iter().map(|s| s.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_scheme_has_exactly_one_source_and_every_registration_builds_its_scheme() {
        let sources = Sources::new(&Settings::default());
        for r in REGISTRY {
            assert_eq!((r.build)(&Settings::default()).scheme(), r.scheme);
        }
        for id in ["hf:o/r", "civitai:1", "file:/x.gguf"] {
            let id: CatalogId = id.parse().unwrap();
            let found: Vec<_> = sources.iter().filter(|s| s.scheme() == id.scheme()).collect();
            assert_eq!(found.len(), 1, "{id}");
            assert_eq!(sources.for_id(&id).unwrap().scheme(), id.scheme());
        }
    }

    #[test]
    fn a_source_refuses_another_sources_id() {
        let how = Describe {
            allow_pickle: false,
            now: DateTime::<Utc>::UNIX_EPOCH,
        };
        let sources = Sources::new(&Settings::default());
        for (scheme, other) in [
            ("file", "hf:o/r"),
            ("hf", "civitai:1"),
            ("civitai", "file:/x.gguf"),
        ] {
            let err = sources
                .get(scheme)
                .unwrap()
                .describe(&other.parse().unwrap(), &how)
                .unwrap_err();
            assert!(matches!(err, SourceError::WrongSource(_)), "{scheme}: {err}");
        }
    }

    #[test]
    fn settings_read_only_the_declared_variables_and_ignore_empty_ones() {
        let settings = Settings::read(|name| match name {
            "HF_ENDPOINT" => Some("http://127.0.0.1:9".into()),
            "CIVITAI_TOKEN" => Some(String::new()),
            _ => Some("x".into()),
        });
        assert_eq!(settings.var("HF_ENDPOINT").as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(settings.var("CIVITAI_TOKEN"), None);
        assert_eq!(settings.var("PATH"), None, "undeclared variables are never read");
    }
}
