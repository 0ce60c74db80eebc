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

mod hf_cache;
mod lock;
mod transfer;
mod verify;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use artifacts_contract::{ArtifactStatus, CatalogId, ModelEntry, ModelFile, ModelSource};

use crate::ingest::{NameKind, UnsafeName, check_name};
use crate::sources::civitai::CivitaiClient;
use crate::sources::hf::HfClient;
use crate::sources::http::{HttpClient, HttpError};

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

/// Where files go, and the clients that fetch them.
#[derive(Debug, Clone)]
pub struct Downloader {
    hf_home: PathBuf,
    catalog_home: PathBuf,
    hf: HfClient,
    civitai: CivitaiClient,
    progress: bool,
}

impl Downloader {
    /// A downloader writing `hf:` files under `hf_home` and others under `catalog_home`; progress bars
    /// are drawn only when stderr is a terminal.
    pub fn new(hf_home: PathBuf, catalog_home: PathBuf, hf: HfClient, civitai: CivitaiClient) -> Self {
        Downloader {
            hf_home,
            catalog_home,
            hf,
            civitai,
            progress: std::io::stderr().is_terminal(),
        }
    }

    /// The folder an entry's files live in once downloaded (`None` for local entries: they stay put).
    /// The revision or version id that names it is checked first: it may come from the network.
    pub fn entry_folder(&self, entry: &ModelEntry) -> Result<Option<PathBuf>, DownloadError> {
        Ok(match (&entry.id, entry.source) {
            (CatalogId::HuggingFace { repo, revision, .. }, _) => {
                let rev = match entry.revision.as_deref() {
                    Some(sha) => {
                        check_name(NameKind::CommitSha, sha)?;
                        sha
                    }
                    None => revision.as_deref().unwrap_or("main"),
                };
                check_name(NameKind::Revision, rev)?;
                Some(hf_repo_dir(&self.hf_home, repo).join("snapshots").join(rev))
            }
            (CatalogId::CivitAi { model, .. }, _) => {
                let version = entry.revision.as_deref().unwrap_or("latest");
                check_name(NameKind::VersionId, version)?;
                Some(
                    self.catalog_home
                        .join("files")
                        .join("civitai")
                        .join(model.to_string())
                        .join(version),
                )
            }
            (_, ModelSource::Local) | (CatalogId::File { .. }, _) => None,
        })
    }

    /// Takes the download lock of an entry (in the catalog home's `locks/`).
    pub fn lock(&self, id: &CatalogId) -> Result<DownloadLock, DownloadError> {
        lock_entry(&self.catalog_home.join("locks"), id)
    }

    fn client_for(&self, entry: &ModelEntry) -> &HttpClient {
        match entry.source {
            ModelSource::CivitAi => self.civitai.http(),
            _ => self.hf.http(),
        }
    }

    fn url_of(&self, entry: &ModelEntry, file: &ModelFile) -> Result<String, DownloadError> {
        if let Some(url) = &file.url {
            return Ok(url.clone());
        }
        match &entry.id {
            CatalogId::HuggingFace { repo, revision, .. } => {
                let rev = entry
                    .revision
                    .as_deref()
                    .or(revision.as_deref())
                    .unwrap_or("main");
                Ok(self.hf.file_url(repo, rev, &file.path))
            }
            other => Err(DownloadError::NoSource(other.to_string())),
        }
    }

    /// Downloads every missing file of an entry into its folder, verifying each; `on_progress` gets the
    /// bytes on disk over all files after each chunk, so callers can record a resumable status.
    pub fn download(
        &self,
        entry: &ModelEntry,
        on_progress: &mut dyn FnMut(u64),
    ) -> Result<PathBuf, DownloadError> {
        let folder = self
            .entry_folder(entry)?
            .ok_or_else(|| DownloadError::NoSource(entry.id.to_string()))?;
        if let CatalogId::HuggingFace {
            revision: Some(rev), ..
        } = &entry.id
        {
            check_name(NameKind::Revision, rev)?;
        }
        for f in &entry.files {
            check_name(NameKind::FilePath, &f.path)?;
        }
        let total: u64 = entry.files.iter().filter_map(|f| f.size).sum();
        let bar = self.progress_bar(total, &entry.id.to_string());
        let mut done_before = 0u64;
        for f in &entry.files {
            let url = self.url_of(entry, f)?;
            let target = folder.join(&f.path);
            let mut report = |n: u64| {
                bar.set_position(done_before + n);
                on_progress(done_before + n);
            };
            match &entry.id {
                CatalogId::HuggingFace { repo, .. } => hf_cache::fetch_into_hf_cache(
                    &self.hf_home,
                    repo,
                    &url,
                    f,
                    &target,
                    self.client_for(entry),
                    &mut report,
                )?,
                _ => transfer::fetch_verified(self.client_for(entry), &url, f, &target, &mut report)?,
            }
            done_before += f.size.unwrap_or(0);
        }
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
