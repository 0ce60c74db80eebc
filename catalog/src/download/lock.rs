//! The download lock: one `catalog pull` per entry at a time, across processes.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use artifacts_contract::CatalogId;
use sha2::{Digest, Sha256};

use super::verify::hex;
use super::{DownloadError, io};

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
