//! Downloads: fetching an entry's files where they belong, resuming, and verifying SHA-256.
//!
//! `hf:` files go into the HuggingFace cache layout under `HF_HOME` (`hub/models--org--name/` with
//! `blobs/`, `refs/` and `snapshots/REV/` links), so the Python tools find them and files they already
//! fetched are reused. CivitAI files go under the catalog home. Every file is written to `NAME.partial`
//! and renamed only once complete and verified; an interrupted download resumes with an HTTP Range
//! request. A file whose name would escape its folder is refused before anything is written.
//!
//! Rooms: [`lock`] (one pull per entry), [`hf_cache`] (the HF cache layout), [`transfer`] (one file
//! over HTTP, resumed) and [`verify`] (sizes and hashes).

pub(crate) mod hf_cache;
mod lock;
pub(crate) mod transfer;
mod verify;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use artifacts_contract::{ArtifactStatus, CatalogId, ModelEntry, ModelSource};

use crate::ingest::{NameKind, UnsafeName, check_name};
use crate::sources::http::HttpError;
use crate::sources::registry::{Source, Sources};

pub use hf_cache::hf_repo_dir;
pub use lock::{DownloadLock, lock_entry};
pub use verify::{sha256_file, sha256_file_reporting, verify_file};

/// Why a download or verification failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The request failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// Writing or reading a file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bytes do not hash to what the source publishes.
    #[error(
        "{file} is corrupt: its SHA-256 is {actual}, the source publishes {expected}; the bad copy was deleted"
    )]
    HashMismatch {
        /// The file.
        file: String,
        /// Published hash.
        expected: String,
        /// Hash of what arrived.
        actual: String,
    },
    /// The file's size is not what the source publishes.
    #[error("{file} has {actual} bytes, the source publishes {expected}")]
    SizeMismatch {
        /// The file.
        file: String,
        /// Published size.
        expected: u64,
        /// Size on disk.
        actual: u64,
    },
    /// A name from the source (file, sha, revision, version id) would escape its folder.
    #[error(transparent)]
    UnsafeName(#[from] UnsafeName),
    /// Another process is downloading the same entry.
    #[error("another catalog process (pid {pid}) is downloading {id}; wait for it, or delete {lock} if none is running", lock = lock.display())]
    Busy {
        /// The entry.
        id: String,
        /// The other process.
        pid: String,
        /// The lock file.
        lock: PathBuf,
    },
    /// The entry has no way to locate its files.
    #[error("{0} has no revision or URL to download from")]
    NoSource(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where files go, and the sources that fetch them.
#[derive(Debug, Clone)]
pub struct Downloader {
    catalog_home: PathBuf,
    sources: Sources,
    progress: bool,
}

impl Downloader {
    /// A downloader writing under `catalog_home` (and where each source keeps its files: `hf:` in the
    /// HF cache); progress bars are drawn only when stderr is a terminal.
    pub fn new(catalog_home: PathBuf, sources: Sources) -> Self {
        Downloader {
            catalog_home,
            sources,
            progress: std::io::stderr().is_terminal(),
        }
    }

    fn source_of(&self, entry: &ModelEntry) -> Result<&dyn Source, DownloadError> {
        self.sources
            .for_id(&entry.id)
            .map_err(|_| DownloadError::NoSource(entry.id.to_string()))
    }

    /// The folder an entry's files live in once downloaded (`None` for local entries: they stay put).
    /// The revision or version id that names it is checked first: it may come from the network.
    pub fn entry_folder(&self, entry: &ModelEntry) -> Result<Option<PathBuf>, DownloadError> {
        if entry.source == ModelSource::Local {
            return Ok(None);
        }
        self.source_of(entry)?.entry_folder(entry, &self.catalog_home)
    }

    /// Takes the download lock of an entry (in the catalog home's `locks/`).
    pub fn lock(&self, id: &CatalogId) -> Result<DownloadLock, DownloadError> {
        lock_entry(&self.catalog_home.join("locks"), id)
    }

    /// Downloads every missing file of an entry into its folder, verifying each; `on_progress` gets the
    /// bytes on disk over all files after each chunk, so callers can record a resumable status.
    pub fn download(
        &self,
        entry: &ModelEntry,
        on_progress: &mut dyn FnMut(u64),
    ) -> Result<PathBuf, DownloadError> {
        let source = self.source_of(entry)?;
        let folder = self
            .entry_folder(entry)?
            .ok_or_else(|| DownloadError::NoSource(entry.id.to_string()))?;
        for f in &entry.files {
            check_name(NameKind::FilePath, &f.path)?;
        }
        let total: u64 = entry.files.iter().filter_map(|f| f.size).sum();
        let bar = self.progress_bar(total, &entry.id.to_string());
        let mut done_before = 0u64;
        for f in &entry.files {
            let mut report = |n: u64| {
                bar.set_position(done_before + n);
                on_progress(done_before + n);
            };
            source.fetch_file(entry, f, &folder.join(&f.path), &mut report)?;
            done_before += f.size.unwrap_or(0);
        }
        source.finish(entry)?;
        bar.finish_and_clear();
        Ok(folder)
    }

    fn progress_bar(&self, total: u64, label: &str) -> indicatif::ProgressBar {
        if !self.progress {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style);
        }
        bar.set_message(label.to_string());
        bar
    }
}

/// The status to record after a download attempt: `Available` only when everything verified.
pub fn status_after(
    result: &Result<PathBuf, DownloadError>,
    downloaded: u64,
    total: Option<u64>,
) -> ArtifactStatus {
    match result {
        Ok(_) => ArtifactStatus::Available,
        Err(DownloadError::Http(HttpError::Transport { .. } | HttpError::Stalled { .. })) => {
            ArtifactStatus::Downloading {
                downloaded_bytes: downloaded,
                total_bytes: total,
            }
        }
        Err(e) => ArtifactStatus::Failed { error: e.to_string() },
    }
}
