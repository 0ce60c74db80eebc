//! Transfers: one file fetched over HTTP into `NAME.partial`, resumed with a Range request, and renamed
//! into place once verified.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use artifacts_contract::ModelFile;
use sha2::{Digest, Sha256};

use super::verify::{check_hash_then_rename, finish, hash_file_into, hex, verify_file};
use super::{DownloadError, io};
use crate::sources::http::{HttpClient, HttpError};

/// Downloads `url` to `target` through `target.partial`, resuming a partial file with a Range request,
/// and renames it into place only when the size and hash match.
pub(crate) fn fetch_verified(
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
    let start = have;
    let mut body = resp.body;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = body
            .read(&mut buf)
            .map_err(|e| DownloadError::Http(http.body_error(url, e, have - start)))?;
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
