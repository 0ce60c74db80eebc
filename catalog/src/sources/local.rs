//! Local files and folders: lists and reads what [`crate::ingest::local`] asks for.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use artifacts_contract::{CatalogId, ModelEntry};
use chrono::{DateTime, Utc};

use super::SourceError;
use super::registry::{Describe, Registration, Source};
use crate::download::DownloadError;
use crate::ingest::gguf::{self, GgufHeader};
use crate::ingest::hf_files::FetchedFiles;
use crate::ingest::local::{self as ingest_local, LocalFile};
use crate::ingest::safetensors::{self, SafetensorsHeader};
use crate::ingest::{IngestError, is_safe_relative_path};

/// Deepest folder level listed (diffusers components are one level down).
const MAX_DEPTH: usize = 3;
/// Largest metadata file read.
const METADATA_LIMIT: u64 = 16 << 20;

fn read_prefix(path: &Path, len: u64) -> Result<Vec<u8>, SourceError> {
    let mut out = Vec::new();
    File::open(path)
        .and_then(|f| f.take(len).read_to_end(&mut out))
        .map_err(|e| SourceError::io(path, e))?;
    Ok(out)
}

/// Reads a GGUF header from a file, reading more until it fits (a short file is a truncated header).
pub fn read_gguf_header(path: &Path) -> Result<GgufHeader, SourceError> {
    let mut size = gguf::FIRST_READ_BYTES;
    loop {
        let bytes = read_prefix(path, size)?;
        match gguf::parse_header(&bytes) {
            Ok(h) => return Ok(h),
            Err(e) => match gguf::next_read_size(&e) {
                Some(next) if bytes.len() as u64 == size => size = next,
                _ => return Err(IngestError::from(e).into()),
            },
        }
    }
}

/// Reads a safetensors header from a file.
pub fn read_safetensors_header(path: &Path) -> Result<SafetensorsHeader, SourceError> {
    let first = read_prefix(path, 8)?;
    let len = safetensors::header_len(&first).map_err(IngestError::from)?;
    let bytes = read_prefix(path, len)?;
    Ok(safetensors::parse_header(&bytes).map_err(IngestError::from)?)
}

fn list(root: &Path, dir: &Path, depth: usize, out: &mut Vec<LocalFile>) -> Result<(), SourceError> {
    let entries = std::fs::read_dir(dir).map_err(|e| SourceError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| SourceError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::metadata(&path).map_err(|e| SourceError::io(&path, e))?;
        if meta.is_dir() && depth < MAX_DEPTH {
            list(root, &path, depth + 1, out)?;
        } else if meta.is_file() {
            let rel = path
                .strip_prefix(root)
                .expect("listed under root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().to_string())
                .collect::<Vec<_>>()
                .join("/");
            out.push(LocalFile {
                path: rel,
                size: meta.len(),
            });
        }
    }
    Ok(())
}

/// Files at least this large get a progress bar while they are hashed (on a terminal).
const PROGRESS_BYTES: u64 = 64 << 20;

/// Describes a local file or folder and records each file's SHA-256, so `catalog verify` notices a
/// changed byte later; the entry's id is `file:` plus the absolute path.
pub fn entry_from_path(path: &Path, now: DateTime<Utc>) -> Result<ModelEntry, SourceError> {
    let mut entry = describe_path(path, now)?;
    hash_files(&mut entry)?;
    Ok(entry)
}

/// Fills in the SHA-256 of every file of a local entry, with a progress bar for large files on a
/// terminal.
fn hash_files(entry: &mut ModelEntry) -> Result<(), SourceError> {
    use std::io::IsTerminal;
    let Some(root) = crate::resolve::entry_root(entry) else {
        return Ok(());
    };
    let total: u64 = entry.files.iter().filter_map(|f| f.size).sum();
    let bar = if total >= PROGRESS_BYTES && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("hashing {msg} {bar:30} {bytes}/{total_bytes} eta {eta}")
        {
            bar.set_style(style);
        }
        bar.set_message(entry.id.to_string());
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    for f in &mut entry.files {
        if !is_safe_relative_path(&f.path) {
            continue;
        }
        let path = root.join(&f.path);
        let sha = crate::download::sha256_file_reporting(&path, &mut |n| bar.inc(n))
            .map_err(|e| SourceError::io(&path, std::io::Error::other(e.to_string())))?;
        f.sha256 = Some(sha);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Describes a local file or folder from its headers and metadata files (no hashing).
fn describe_path(path: &Path, now: DateTime<Utc>) -> Result<ModelEntry, SourceError> {
    let abs: PathBuf = std::fs::canonicalize(path).map_err(|e| SourceError::io(path, e))?;
    let shown = abs.display().to_string();
    let id = CatalogId::File { path: shown.clone() };
    let meta = std::fs::metadata(&abs).map_err(|e| SourceError::io(&abs, e))?;
    if meta.is_dir() {
        let mut listing = Vec::new();
        list(&abs, &abs, 0, &mut listing)?;
        listing.sort_by(|a, b| a.path.cmp(&b.path));
        let plan = ingest_local::plan_folder(&shown, &listing)?;
        let mut files = FetchedFiles::new();
        for name in &plan.metadata_files {
            files.insert(name.clone(), read_prefix(&abs.join(name), METADATA_LIMIT)?);
        }
        let (mut g, mut s) = (None, None);
        if let Some(weights) = plan.header_of.as_deref().filter(|w| is_safe_relative_path(w)) {
            if weights.to_ascii_lowercase().ends_with(".gguf") {
                g = Some(read_gguf_header(&abs.join(weights))?);
            } else {
                s = Some(read_safetensors_header(&abs.join(weights))?);
            }
        }
        return Ok(ingest_local::entry_from_folder(
            id,
            &shown,
            &listing,
            &files,
            g.as_ref(),
            s.as_ref(),
            now,
        )?);
    }
    let lower = shown.to_ascii_lowercase();
    if lower.ends_with(".gguf") {
        let header = read_gguf_header(&abs)?;
        Ok(ingest_local::entry_from_gguf(
            id,
            &shown,
            meta.len(),
            &header,
            now,
        ))
    } else if lower.ends_with(".safetensors") {
        let header = read_safetensors_header(&abs)?;
        let config_path = abs.with_file_name("config.json");
        let config = config_path
            .is_file()
            .then(|| read_prefix(&config_path, METADATA_LIMIT))
            .transpose()?;
        Ok(ingest_local::entry_from_safetensors(
            id,
            &shown,
            meta.len(),
            &header,
            config.as_deref(),
            now,
        )?)
    } else {
        Err(IngestError::Unrecognized(
            shown,
            "only .gguf and .safetensors files, diffusers folders and HF-style folders are catalogued".into(),
        )
        .into())
    }
}

/// `file:` ids, registered in [`super::registry::REGISTRY`]: files and folders on this machine, which
/// stay where they are.
pub const REGISTRATION: Registration = Registration {
    scheme: "file",
    env: &[],
    build: |_| Arc::new(LocalFiles),
};

/// Files and folders on this machine (`file:` ids).
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalFiles;

impl Source for LocalFiles {
    fn scheme(&self) -> &'static str {
        "file"
    }

    fn describe(&self, id: &CatalogId, how: &Describe) -> Result<ModelEntry, SourceError> {
        match id {
            CatalogId::File { path } => entry_from_path(Path::new(path), how.now),
            other => Err(SourceError::WrongSource(other.to_string())),
        }
    }

    fn entry_folder(
        &self,
        _entry: &ModelEntry,
        _catalog_home: &Path,
    ) -> Result<Option<PathBuf>, DownloadError> {
        Ok(None)
    }
}
