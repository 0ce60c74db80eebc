//! The HuggingFace cache layout under `HF_HOME`: `hub/models--org--name/` with `blobs/SHA256`,
//! `refs/BRANCH` and `snapshots/REV/` links, as huggingface_hub writes it.

use std::fs;
use std::path::{Path, PathBuf};

use artifacts_contract::ModelFile;

use super::transfer::fetch_verified;
use super::verify::{sha256_file, verify_file};
use super::{DownloadError, io};
use crate::ingest::{NameKind, check_name};
use crate::sources::http::HttpClient;

/// The HF cache folder of a repo: `HF_HOME/hub/models--org--name`.
pub fn hf_repo_dir(hf_home: &Path, repo: &str) -> PathBuf {
    hf_home
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")))
}

/// Records `refs/BRANCH` naming the commit a branch pointed at, as huggingface_hub writes it.
pub(crate) fn write_ref(hf_home: &Path, repo: &str, rev: &str, sha: &str) -> Result<(), DownloadError> {
    check_name(NameKind::Revision, rev)?;
    check_name(NameKind::CommitSha, sha)?;
    let refs = hf_repo_dir(hf_home, repo).join("refs").join(rev);
    fs::create_dir_all(refs.parent().expect("refs has a parent")).map_err(io(&refs))?;
    fs::write(&refs, sha).map_err(io(&refs))
}

/// Fetches one file into `blobs/SHA256` (reusing a blob already there) and links it from the
/// snapshot folder.
pub(crate) fn fetch_into_hf_cache(
    hf_home: &Path,
    repo: &str,
    url: &str,
    file: &ModelFile,
    target: &Path,
    http: &HttpClient,
    report: &mut dyn FnMut(u64),
) -> Result<(), DownloadError> {
    let blobs = hf_repo_dir(hf_home, repo).join("blobs");
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
