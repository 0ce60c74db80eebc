//! Downloads: fetching an entry's files where they belong, resuming, and verifying SHA-256.
//!
//! `hf:` files go into the HuggingFace cache layout under `HF_HOME` (`hub/models--org--name/` with
//! `blobs/`, `refs/` and `snapshots/REV/` links), so the Python tools find them and files they already
//! fetched are reused. CivitAI files go under the catalog home. Every file is written to `NAME.partial`
//! and renamed only once complete and verified; an interrupted download resumes with an HTTP Range
//! request. A file whose name would escape its folder is refused before anything is written.

use std::fs::{self, File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use artifacts_contract::{ArtifactStatus, CatalogId, ModelEntry, ModelFile, ModelSource};
use sha2::{Digest, Sha256};

use crate::ingest::is_safe_relative_path;
use crate::sources::civitai::CivitaiClient;
use crate::sources::hf::HfClient;
use crate::sources::http::{HttpClient, HttpError};

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
    /// A remote file name would escape its folder.
    #[error("refusing the file name {0:?}: it is absolute or climbs out of the model folder")]
    UnsafePath(String),
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

/// A lock file held while this process downloads an entry, so two `catalog pull`s of one entry never
/// write the same partial file; removed when dropped. A lock left by a process that died is taken over.
#[derive(Debug)]
pub struct DownloadLock {
    path: PathBuf,
}

impl Drop for DownloadLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether a process still runs; where that cannot be told (no `/proc`), assume it does.
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

/// Takes the download lock of an entry id under `locks_dir`.
pub fn lock_entry(locks_dir: &Path, id: &CatalogId) -> Result<DownloadLock, DownloadError> {
    fs::create_dir_all(locks_dir).map_err(io(locks_dir))?;
    let name = hex(&Sha256::digest(id.to_string().as_bytes())[..16]);
    let path = locks_dir.join(format!("{name}.lock"));
    for _ in 0..2 {
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                write!(f, "{}", std::process::id()).map_err(io(&path))?;
                return Ok(DownloadLock { path });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                match holder.trim().parse::<u32>() {
                    Ok(pid) if process_alive(pid) => {
                        return Err(DownloadError::Busy {
                            id: id.to_string(),
                            pid: pid.to_string(),
                            lock: path,
                        });
                    }
                    // Left by a process that died (or half-written): take it over.
                    _ => {
                        let _ = fs::remove_file(&path);
                    }
                }
            }
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Err(DownloadError::Busy {
        id: id.to_string(),
        pid: "unknown".into(),
        lock: path,
    })
}

/// The HF cache folder of a repo: `HF_HOME/hub/models--org--name`.
pub fn hf_repo_dir(hf_home: &Path, repo: &str) -> PathBuf {
    hf_home
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")))
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
    pub fn entry_folder(&self, entry: &ModelEntry) -> Option<PathBuf> {
        match (&entry.id, entry.source) {
            (CatalogId::HuggingFace { repo, revision, .. }, _) => {
                let rev = entry
                    .revision
                    .as_deref()
                    .or(revision.as_deref())
                    .unwrap_or("main");
                Some(hf_repo_dir(&self.hf_home, repo).join("snapshots").join(rev))
            }
            (CatalogId::CivitAi { model, .. }, _) => Some(
                self.catalog_home
                    .join("files")
                    .join("civitai")
                    .join(model.to_string())
                    .join(entry.revision.as_deref().unwrap_or("latest")),
            ),
            (_, ModelSource::Local) | (CatalogId::File { .. }, _) => None,
        }
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
            .entry_folder(entry)
            .ok_or_else(|| DownloadError::NoSource(entry.id.to_string()))?;
        for f in &entry.files {
            if !is_safe_relative_path(&f.path) {
                return Err(DownloadError::UnsafePath(f.path.clone()));
            }
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
                CatalogId::HuggingFace { repo, .. } => {
                    self.fetch_into_hf_cache(repo, &url, f, &target, self.client_for(entry), &mut report)?
                }
                _ => fetch_verified(self.client_for(entry), &url, f, &target, &mut report)?,
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
            // refs/BRANCH names the commit, as huggingface_hub writes it.
            let refs = hf_repo_dir(&self.hf_home, repo).join("refs").join(rev);
            if is_safe_relative_path(rev) {
                fs::create_dir_all(refs.parent().expect("refs has a parent")).map_err(io(&refs))?;
                fs::write(&refs, sha).map_err(io(&refs))?;
            }
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

    /// Fetches one file into `blobs/SHA256` (reusing a blob already there) and links it from the
    /// snapshot folder.
    fn fetch_into_hf_cache(
        &self,
        repo: &str,
        url: &str,
        file: &ModelFile,
        target: &Path,
        http: &HttpClient,
        report: &mut dyn FnMut(u64),
    ) -> Result<(), DownloadError> {
        let blobs = hf_repo_dir(&self.hf_home, repo).join("blobs");
        fs::create_dir_all(&blobs).map_err(io(&blobs))?;
        let blob = match &file.sha256 {
            Some(sha) if sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()) => {
                let blob = blobs.join(sha);
                if !(blob.is_file() && verify_file(&blob, file).is_ok()) {
                    fetch_verified(http, url, file, &blob, report)?;
                }
                blob
            }
            // Small non-LFS files have no published hash: name the blob by the hash of what arrived.
            _ => {
                let tmp = blobs.join(format!("download-{}", std::process::id()));
                fetch_verified(http, url, file, &tmp, report)?;
                let sha = sha256_file(&tmp)?;
                let blob = blobs.join(&sha);
                fs::rename(&tmp, &blob).map_err(io(&blob))?;
                blob
            }
        };
        report(file.size.unwrap_or(0));
        link(&blob, target)
    }
}

/// Links `target` to `blob` with a relative symlink, as huggingface_hub does (a copy where symlinks
/// are unavailable).
fn link(blob: &Path, target: &Path) -> Result<(), DownloadError> {
    let parent = target.parent().expect("a file has a parent");
    fs::create_dir_all(parent).map_err(io(parent))?;
    if target.symlink_metadata().is_ok() {
        fs::remove_file(target).map_err(io(target))?;
    }
    #[cfg(unix)]
    {
        let depth = target
            .strip_prefix(
                blob.parent()
                    .and_then(Path::parent)
                    .expect("blobs is in a repo dir"),
            )
            .map(|p| p.components().count() - 1)
            .unwrap_or(0);
        let mut rel = PathBuf::new();
        for _ in 0..depth {
            rel.push("..");
        }
        rel.push("blobs");
        rel.push(blob.file_name().expect("a blob has a name"));
        std::os::unix::fs::symlink(&rel, target).map_err(io(target))
    }
    #[cfg(not(unix))]
    {
        fs::copy(blob, target).map(|_| ()).map_err(io(target))
    }
}

/// Feeds a file's bytes to a hasher.
fn hash_file_into(
    hasher: &mut Sha256,
    path: &Path,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<(), DownloadError> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
        on_bytes(n as u64);
    }
}

/// The lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, DownloadError> {
    sha256_file_reporting(path, &mut |_| {})
}

/// The lower-case hex SHA-256 of a file; `on_bytes` hears of each chunk read, for a progress bar.
pub fn sha256_file_reporting(path: &Path, on_bytes: &mut dyn FnMut(u64)) -> Result<String, DownloadError> {
    let mut hasher = Sha256::new();
    hash_file_into(&mut hasher, path, on_bytes)?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a file on disk against the size and SHA-256 the source publishes.
pub fn verify_file(path: &Path, file: &ModelFile) -> Result<(), DownloadError> {
    let len = fs::metadata(path).map_err(io(path))?.len();
    if let Some(expected) = file.size
        && expected != len
    {
        return Err(DownloadError::SizeMismatch {
            file: file.path.clone(),
            expected,
            actual: len,
        });
    }
    if let Some(expected) = &file.sha256 {
        let actual = sha256_file(path)?;
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(DownloadError::HashMismatch {
                file: file.path.clone(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    Ok(())
}

/// Downloads `url` to `target` through `target.partial`, resuming a partial file with a Range request,
/// and renames it into place only when the size and hash match.
fn fetch_verified(
    http: &HttpClient,
    url: &str,
    file: &ModelFile,
    target: &Path,
    report: &mut dyn FnMut(u64),
) -> Result<(), DownloadError> {
    if target.is_file() && verify_file(target, file).is_ok() {
        report(file.size.unwrap_or(0));
        return Ok(());
    }
    let parent = target.parent().expect("a file has a parent");
    fs::create_dir_all(parent).map_err(io(parent))?;
    let partial = PathBuf::from(format!("{}.partial", target.display()));
    let mut have = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    if file.size.is_some_and(|s| have > s) {
        have = 0;
    }
    let mut hasher = Sha256::new();
    let resp = if have > 0 && file.size != Some(have) {
        http.get(url, Some((have, None)))?
    } else if have > 0 {
        // Complete but unverified: hash it below without fetching.
        return finish(&partial, target, file);
    } else {
        http.get(url, None)?
    };
    let mut out = if resp.status == 206 && have > 0 {
        // Hash what is already there, then append.
        hash_file_into(&mut hasher, &partial, &mut |_| {})?;
        OpenOptions::new()
            .append(true)
            .open(&partial)
            .map_err(io(&partial))?
    } else {
        // The server ignored the Range: start over.
        have = 0;
        File::create(&partial).map_err(io(&partial))?
    };
    let mut body = resp.body;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = body.read(&mut buf).map_err(|e| {
            DownloadError::Http(HttpError::Transport {
                url: url.to_string(),
                message: e.to_string(),
            })
        })?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(io(&partial))?;
        hasher.update(&buf[..n]);
        have += n as u64;
        report(have);
    }
    out.sync_all().map_err(io(&partial))?;
    drop(out);
    if let Some(expected) = file.size
        && have < expected
    {
        return Err(DownloadError::Http(HttpError::Transport {
            url: url.to_string(),
            message: format!(
                "the connection closed after {have} of {expected} bytes; run the command again to resume"
            ),
        }));
    }
    let actual = hex(&hasher.finalize());
    check_hash_then_rename(&partial, target, file, actual)
}

fn finish(partial: &Path, target: &Path, file: &ModelFile) -> Result<(), DownloadError> {
    let actual = sha256_file(partial)?;
    check_hash_then_rename(partial, target, file, actual)
}

fn check_hash_then_rename(
    partial: &Path,
    target: &Path,
    file: &ModelFile,
    actual: String,
) -> Result<(), DownloadError> {
    if let Some(expected) = &file.sha256
        && !actual.eq_ignore_ascii_case(expected)
    {
        // A complete file with the wrong hash cannot be resumed into a good one.
        let _ = fs::remove_file(partial);
        return Err(DownloadError::HashMismatch {
            file: file.path.clone(),
            expected: expected.clone(),
            actual,
        });
    }
    let len = fs::metadata(partial).map_err(io(partial))?.len();
    if let Some(expected) = file.size
        && expected != len
    {
        let _ = fs::remove_file(partial);
        return Err(DownloadError::SizeMismatch {
            file: file.path.clone(),
            expected,
            actual: len,
        });
    }
    fs::rename(partial, target).map_err(io(target))
}

/// The status to record after a download attempt: `Available` only when everything verified.
pub fn status_after(
    result: &Result<PathBuf, DownloadError>,
    downloaded: u64,
    total: Option<u64>,
) -> ArtifactStatus {
    match result {
        Ok(_) => ArtifactStatus::Available,
        Err(DownloadError::Http(HttpError::Transport { .. })) => ArtifactStatus::Downloading {
            downloaded_bytes: downloaded,
            total_bytes: total,
        },
        Err(e) => ArtifactStatus::Failed { error: e.to_string() },
    }
}
