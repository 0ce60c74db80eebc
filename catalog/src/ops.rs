//! What the `catalog` command does, as library calls: add, pull, verify, remove, identify.
//!
//! The command only parses arguments, builds a [`Sources`] from the environment and prints; everything
//! else is here so it can be tested without a process.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use artifacts_contract::{ArtifactStatus, CatalogId, IdError, ModelEntry, ModelSource};
use chrono::{DateTime, Utc};

use crate::download::{self, DownloadError, Downloader};
use crate::ingest::IngestError;
use crate::resolve::entry_root;
use crate::sources::SourceError;
use crate::sources::registry::Describe;
pub use crate::sources::registry::{Settings, Sources};
use crate::store::{Catalog, StoreError};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The id or source is malformed.
    #[error(transparent)]
    Id(#[from] IdError),
    /// The source could not describe the model.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A download or verification failed.
    #[error(transparent)]
    Download(#[from] DownloadError),
    /// The id is not in the catalog.
    #[error("no model {id} in the catalog at {home}; add it with `catalog add {id}`")]
    Unknown {
        /// The id.
        id: CatalogId,
        /// The catalog home.
        home: PathBuf,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A downloader for a catalog: its files go under the catalog home and where each source keeps them.
pub fn downloader(catalog: &Catalog, sources: &Sources) -> Downloader {
    Downloader::new(catalog.home().to_path_buf(), sources.clone())
}

/// The current time, read once per command and passed down (ingestion never reads the clock).
pub fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from(SystemTime::now())
}

/// Reads what the user typed as a source: a catalog id, or a path to a file or folder on disk.
pub fn parse_source(source: &str) -> Result<CatalogId, OpsError> {
    match source.parse::<CatalogId>() {
        Ok(id) => Ok(id),
        Err(IdError::UnknownScheme(_)) if Path::new(source).exists() => Ok(CatalogId::File {
            path: source.to_string(),
        }),
        // Looks like a path but is not there: say so rather than complain about the id scheme.
        Err(IdError::UnknownScheme(_))
            if source.contains(['/', '\\'])
                || source.ends_with(".gguf")
                || source.ends_with(".safetensors") =>
        {
            Err(OpsError::Io {
                path: PathBuf::from(source),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Describes a source without storing it; pickle weights are refused unless `allow_pickle`.
pub fn describe(sources: &Sources, id: &CatalogId, allow_pickle: bool) -> Result<ModelEntry, OpsError> {
    let how = Describe {
        allow_pickle,
        now: now(),
    };
    let entry = sources.for_id(id)?.describe(id, &how)?;
    if !allow_pickle && let Some(file) = entry.pickle_files().next() {
        return Err(SourceError::from(IngestError::Pickle {
            file: file.path.clone(),
        })
        .into());
    }
    Ok(entry)
}

/// Options of `catalog add`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AddOptions {
    /// Fetch the files now.
    pub download: bool,
    /// Accept pickle weights.
    pub allow_pickle: bool,
}

/// Describes a source, stores the entry, and (unless told not to) downloads its files.
pub fn add(
    catalog: &Catalog,
    sources: &Sources,
    source: &str,
    opts: AddOptions,
) -> Result<ModelEntry, OpsError> {
    let id = parse_source(source)?;
    let mut entry = describe(sources, &id, opts.allow_pickle)?;
    if let Some(old) = catalog.get(&entry.id)?
        && old.revision == entry.revision
        && old.status.is_available()
    {
        // Re-adding what is already here keeps its files and status.
        entry.status = old.status;
        entry.path = old.path;
    }
    catalog.upsert(&entry)?;
    if opts.download && !entry.status.is_available() {
        return pull(catalog, sources, &entry.id);
    }
    Ok(catalog.get(&entry.id)?.unwrap_or(entry))
}

fn get(catalog: &Catalog, id: &CatalogId) -> Result<ModelEntry, OpsError> {
    catalog.get(id)?.ok_or_else(|| OpsError::Unknown {
        id: id.clone(),
        home: catalog.home().to_path_buf(),
    })
}

/// Downloads an entry's files, recording progress so an interruption leaves a resumable status, and
/// marks it available only when every file verified.
pub fn pull(catalog: &Catalog, sources: &Sources, id: &CatalogId) -> Result<ModelEntry, OpsError> {
    pull_with_progress(catalog, sources, id, &mut |_| {})
}

/// [`pull`], telling `on_progress` the bytes on disk over all files after each chunk (how
/// `catalog serve` streams a pull's progress).
pub fn pull_with_progress(
    catalog: &Catalog,
    sources: &Sources,
    id: &CatalogId,
    on_progress: &mut dyn FnMut(u64),
) -> Result<ModelEntry, OpsError> {
    let entry = get(catalog, id)?;
    if entry.source == ModelSource::Local {
        return verify(catalog, id);
    }
    let downloader = downloader(catalog, sources);
    let _lock = downloader.lock(id)?;
    let total = Some(entry.files.iter().filter_map(|f| f.size).sum()).filter(|t: &u64| *t > 0);
    let mut downloaded = 0u64;
    catalog.update(id, |e| {
        e.status = ArtifactStatus::Downloading {
            downloaded_bytes: 0,
            total_bytes: total,
        };
        e.updated_at = now();
    })?;
    let result = downloader.download(&entry, &mut |n| {
        downloaded = n;
        on_progress(n);
    });
    let status = download::status_after(&result, downloaded, total);
    let updated = catalog.update(id, |e| {
        e.status = status;
        if let Ok(folder) = &result {
            e.path = Some(folder.display().to_string());
        }
        e.updated_at = now();
    })?;
    result?;
    Ok(updated.unwrap_or(entry))
}

/// Re-checks every file of an entry (size and SHA-256) and records the result as its status.
pub fn verify(catalog: &Catalog, id: &CatalogId) -> Result<ModelEntry, OpsError> {
    let entry = get(catalog, id)?;
    let local = entry.source == ModelSource::Local;
    let root = entry_root(&entry);
    let outcome = match &root {
        None if local => Err(format!(
            "{} is gone (moved or deleted); if it moved, run `catalog rm {id}` and `catalog add NEW_PATH`",
            entry.path.as_deref().unwrap_or("its folder")
        )),
        None => Err(format!("{id} has not been downloaded; run `catalog pull {id}`")),
        Some(root) => entry.files.iter().try_for_each(|f| {
            let path = root.join(&f.path);
            match (path.is_file(), local) {
                (true, _) => {}
                (false, true) => {
                    return Err(format!(
                        "{} is missing (moved or deleted?); if the model moved, run `catalog rm {id}` and \
                         `catalog add NEW_PATH`",
                        path.display()
                    ));
                }
                (false, false) => {
                    return Err(format!("{} is missing; run `catalog pull {id}`", path.display()));
                }
            }
            download::verify_file(&path, f).map_err(|e| match (e, local) {
                (DownloadError::HashMismatch { file, .. }, true) => format!(
                    "{file} changed since it was added (its SHA-256 differs); run `catalog add {}` to record \
                     it as it is now",
                    entry.path.as_deref().unwrap_or(&file)
                ),
                (e, _) => e.to_string(),
            })
        }),
    };
    let status = match &outcome {
        Ok(()) => ArtifactStatus::Available,
        Err(_) if root.is_none() => ArtifactStatus::NotDownloaded,
        Err(e) => ArtifactStatus::Failed { error: e.clone() },
    };
    let updated = catalog.update(id, |e| {
        e.status = status;
        e.updated_at = now();
    })?;
    Ok(updated.unwrap_or(entry))
}

/// Removes an entry and, unless `keep_files`, the files the catalog downloaded for it (files of local
/// entries are the user's and are never deleted).
pub fn remove(
    catalog: &Catalog,
    sources: &Sources,
    id: &CatalogId,
    keep_files: bool,
) -> Result<ModelEntry, OpsError> {
    let entry = get(catalog, id)?;
    if !keep_files && entry.source != ModelSource::Local {
        let downloader = downloader(catalog, sources);
        if let Some(folder) = downloader.entry_folder(&entry)? {
            // Files and HF blobs another entry also uses (two quant ids of one repo, shared configs) stay.
            let mut shared = Shared::default();
            for other in catalog.list(&crate::store::Filter::default())? {
                if other.id == entry.id {
                    continue;
                }
                // A row with a bad name shares nothing with this entry.
                let other_folder = downloader.entry_folder(&other).ok().flatten();
                for f in &other.files {
                    shared.blobs.extend(f.sha256.clone());
                    if let Some(dir) = &other_folder {
                        shared.paths.push(dir.join(&f.path));
                    }
                }
            }
            delete_files(&entry, &folder, &shared)?;
        }
    }
    catalog.remove(id)?;
    Ok(entry)
}

/// What other entries still use.
#[derive(Default)]
struct Shared {
    blobs: std::collections::HashSet<String>,
    paths: Vec<PathBuf>,
}

fn delete_files(entry: &ModelEntry, folder: &Path, shared: &Shared) -> Result<(), OpsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OpsError::Io { path, source }
    };
    for f in &entry.files {
        if !crate::ingest::is_safe_relative_path(&f.path) {
            continue;
        }
        let path = folder.join(&f.path);
        if shared.paths.contains(&path) {
            continue;
        }
        // An HF snapshot file links to a blob: remove the blob too, unless another entry uses it.
        if let Ok(target) = std::fs::read_link(&path) {
            let blob = path.parent().unwrap_or(folder).join(target);
            let name = blob
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            if blob.is_file() && !shared.blobs.contains(&name) {
                std::fs::remove_file(&blob).map_err(io(&blob))?;
            }
        }
        for p in [path.clone(), PathBuf::from(format!("{}.partial", path.display()))] {
            if p.symlink_metadata().is_ok() {
                std::fs::remove_file(&p).map_err(io(&p))?;
            }
        }
    }
    // Leave the folder only if something else lives there.
    let _ = std::fs::remove_dir(folder);
    Ok(())
}

/// The SHA-256 of a file and what the first source that can look files up by hash (CivitAI) knows
/// it as.
pub fn identify(sources: &Sources, path: &Path) -> Result<(String, Option<ModelEntry>), OpsError> {
    let sha = download::sha256_file(path)?;
    let now = now();
    for source in sources.iter() {
        if let Some(found) = source.identify(&sha, now) {
            return Ok((sha, found?));
        }
    }
    Ok((sha, None))
}
