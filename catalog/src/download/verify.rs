//! Verification: sizes and SHA-256 hashes against what the source publishes.

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;

use artifacts_contract::ModelFile;
use sha2::{Digest, Sha256};

use super::{DownloadError, io};

/// Feeds a file's bytes to a hasher; `on_bytes` hears of each chunk read.
pub(super) fn hash_file_into(
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

/// Lower-case hex of bytes.
pub(super) fn hex(bytes: &[u8]) -> String {
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

/// Hashes a complete partial file, then renames it into place if it verifies.
pub(super) fn finish(partial: &Path, target: &Path, file: &ModelFile) -> Result<(), DownloadError> {
    let actual = sha256_file(partial)?;
    check_hash_then_rename(partial, target, file, actual)
}

/// Renames a partial file into place when its hash (`actual`) and size match; deletes it otherwise.
pub(super) fn check_hash_then_rename(
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
