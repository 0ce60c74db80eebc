//! The catalog home: the folder holding the database and the files of CivitAI and local-copy entries.
//!
//! One function decides it, so the command line and the workers always open the same catalog:
//! `CATALOG_HOME` when set, else `open-model-catalog` in the platform's data directory. The command's
//! `--catalog-home` flag (the same in every binary) overrides both by passing a path to [`crate::Catalog::open`] directly.

use std::path::PathBuf;

/// The environment variable that moves the catalog home.
pub const HOME_ENV: &str = "CATALOG_HOME";

/// Why no catalog home could be decided.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// Neither `CATALOG_HOME` nor a platform data directory is available.
    #[error(
        "no catalog home: set CATALOG_HOME or pass --catalog-home DIR (this platform has no data directory)"
    )]
    NoDataDir,
}

/// The catalog home every part of the project uses unless told otherwise.
pub fn default_home() -> Result<PathBuf, HomeError> {
    match std::env::var_os(HOME_ENV) {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => dirs::data_dir()
            .map(|d| d.join("open-model-catalog"))
            .ok_or(HomeError::NoDataDir),
    }
}
