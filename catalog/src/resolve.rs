//! Resolution: what a worker asks before loading a model — is it in the catalog, can this worker run it,
//! are its files here, and where exactly.
//!
//! Every error says what to do next (`catalog add`, `catalog pull`), so a worker can pass it on verbatim.

use std::path::{Path, PathBuf};

use artifacts_contract::{CatalogId, DeviceKind, ModelEntry, ModelFile, WorkerCapabilities, compat};

use crate::store::{Catalog, StoreError};

/// An entry whose files are all on disk, with their absolute paths.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedModel {
    /// The entry.
    pub entry: ModelEntry,
    /// The folder the files' relative paths start from.
    pub root: PathBuf,
    /// Every file of the entry, with its absolute path.
    pub files: Vec<(ModelFile, PathBuf)>,
}

impl ResolvedModel {
    /// The absolute paths of the files with a role, in the entry's order (e.g. all weight shards).
    pub fn paths_with_role(&self, role: artifacts_contract::FileRole) -> Vec<&Path> {
        self.files
            .iter()
            .filter(|(f, _)| f.role == role)
            .map(|(_, p)| p.as_path())
            .collect()
    }
}

/// Why an entry cannot be loaded; each message names the command that fixes it.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Not in the catalog.
    #[error("no model {id} in the catalog at {home}; add it with `catalog add {id}`")]
    Unknown {
        /// The id asked for.
        id: CatalogId,
        /// The catalog home searched.
        home: PathBuf,
    },
    /// In the catalog, but its files are not all downloaded and verified.
    #[error("{id} is in the catalog but its files are not ready ({reason}); run `catalog pull {id}`")]
    NotDownloaded {
        /// The id.
        id: CatalogId,
        /// What is missing (status, or the missing file).
        reason: String,
    },
    /// The worker cannot run it.
    #[error("{worker} cannot run {id}: {}", reasons.join("; "))]
    Incompatible {
        /// The id.
        id: CatalogId,
        /// The worker asked about.
        worker: artifacts_contract::WorkerKind,
        /// The contract's reasons, one sentence each.
        reasons: Vec<String>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn status_words(status: &artifacts_contract::ArtifactStatus) -> String {
    use artifacts_contract::ArtifactStatus::*;
    match status {
        NotDownloaded => "not downloaded".into(),
        Downloading {
            downloaded_bytes,
            total_bytes,
        } => match total_bytes {
            Some(t) => format!("download interrupted at {downloaded_bytes} of {t} bytes"),
            None => format!("download interrupted at {downloaded_bytes} bytes"),
        },
        Available => "available".into(),
        Failed { error } => format!("last download failed: {error}"),
    }
}

/// The folder an entry's relative file paths start from: its `path`, or the parent of a single-file path
/// (also when that file has gone, so a moved file is reported at its real path).
pub fn entry_root(entry: &ModelEntry) -> Option<PathBuf> {
    let path = PathBuf::from(entry.path.as_ref()?);
    let names_its_one_file =
        matches!(entry.files.as_slice(), [one] if path.file_name().is_some_and(|n| n == one.path.as_str()));
    if path.is_file() || (names_its_one_file && !path.is_dir()) {
        path.parent().map(Path::to_path_buf)
    } else {
        Some(path)
    }
}

/// Finds an entry, checks the worker can run it on `device`, and that every file is on disk.
pub fn resolve(
    catalog: &Catalog,
    id: &CatalogId,
    worker: &WorkerCapabilities,
    device: Option<DeviceKind>,
) -> Result<ResolvedModel, ResolveError> {
    let entry = catalog.get(id)?.ok_or_else(|| ResolveError::Unknown {
        id: id.clone(),
        home: catalog.home().to_path_buf(),
    })?;
    let compatibility = compat::check(&entry, worker, device);
    if !compatibility.compatible {
        return Err(ResolveError::Incompatible {
            id: id.clone(),
            worker: worker.kind,
            reasons: compatibility.reasons,
        });
    }
    if !entry.status.is_available() {
        return Err(ResolveError::NotDownloaded {
            id: id.clone(),
            reason: status_words(&entry.status),
        });
    }
    let root = entry_root(&entry).ok_or_else(|| ResolveError::NotDownloaded {
        id: id.clone(),
        reason: "the entry records no folder".into(),
    })?;
    let mut files = Vec::with_capacity(entry.files.len());
    for f in &entry.files {
        let path = root.join(&f.path);
        if !path.is_file() {
            return Err(ResolveError::NotDownloaded {
                id: id.clone(),
                reason: format!("{} is missing", path.display()),
            });
        }
        files.push((f.clone(), path));
    }
    Ok(ResolvedModel { entry, root, files })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_entries::llm_entry;
    use artifacts_contract::{ArtifactStatus, WorkerKind};

    #[test]
    fn each_failure_names_the_command_that_fixes_it() {
        let home = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(home.path()).unwrap();
        let llm = WorkerCapabilities::builtin(WorkerKind::Llm);
        let id: CatalogId = "hf:org/tiny".parse().unwrap();

        let err = resolve(&catalog, &id, &llm, None).unwrap_err().to_string();
        assert!(err.contains("add it with `catalog add hf:org/tiny`"), "{err}");
        assert!(err.contains(&home.path().display().to_string()), "{err}");

        let mut entry = llm_entry("hf:org/tiny");
        catalog.upsert(&entry).unwrap();
        let err = resolve(&catalog, &id, &llm, None).unwrap_err().to_string();
        assert!(err.contains("run `catalog pull hf:org/tiny`"), "{err}");

        let sd = WorkerCapabilities::builtin(WorkerKind::Sd);
        let err = resolve(&catalog, &id, &sd, None).unwrap_err();
        assert!(matches!(err, ResolveError::Incompatible { .. }), "{err}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.gguf"), b"GGUF").unwrap();
        entry.path = Some(dir.path().display().to_string());
        entry.status = ArtifactStatus::Available;
        catalog.upsert(&entry).unwrap();
        let resolved = resolve(&catalog, &id, &llm, None).unwrap();
        assert_eq!(resolved.files[0].1, dir.path().join("model.gguf"));

        std::fs::remove_file(dir.path().join("model.gguf")).unwrap();
        let err = resolve(&catalog, &id, &llm, None).unwrap_err().to_string();
        assert!(err.contains("model.gguf is missing"), "{err}");
    }
}
