//! The flags that choose a model and a device, the same in every worker's `generate` and `serve`:
//! a catalog id resolved in the catalog home, or a path loaded directly.

use std::path::PathBuf;

use artifacts_contract::CatalogId;
use candle_core::Device;
use catalog::Catalog;

use crate::device::{DeviceError, parse_device};

/// Which model to load, and where to run it; each worker flattens it into its commands.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// A catalog id (`hf:org/name`, `civitai:ID`, `file:PATH`...), resolved in the catalog home.
    #[arg(long, conflicts_with = "model_path", required_unless_present = "model_path")]
    pub model: Option<String>,
    /// A model file or folder, loaded directly without the catalog (for development).
    #[arg(long)]
    pub model_path: Option<PathBuf>,
    /// The catalog home (default: `CATALOG_HOME`, else the platform's data directory).
    #[arg(long)]
    pub catalog_home: Option<PathBuf>,
    /// `cpu`, `cuda:N` (feature `cuda`) or `metal` (feature `metal`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Where the model comes from, once the flags are read.
pub enum ModelOrigin {
    /// A catalog entry, with the catalog it lives in.
    Catalog {
        /// The entry.
        id: CatalogId,
        /// The opened catalog, to resolve the entry against this worker.
        catalog: Catalog,
    },
    /// A file or folder given directly.
    Path(PathBuf),
}

/// Why the model flags cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum ModelArgsError {
    /// `--model` is not a catalog id.
    #[error("`{id}` is not a catalog id: {reason}")]
    BadId {
        /// What was given.
        id: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The catalog home could not be decided or opened.
    #[error("opening the catalog: {0}")]
    Catalog(#[from] catalog::StoreError),
    /// Neither flag was given (clap prevents it; a caller building the struct may not).
    #[error("give --model ID or --model-path PATH")]
    NoModel,
    /// The device cannot be opened.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

impl ModelArgs {
    /// Opens the device the flags name.
    pub fn device(&self) -> Result<Device, ModelArgsError> {
        Ok(parse_device(&self.device)?)
    }

    /// The model's catalog id, or `file:PATH` for `--model-path`: its name in logs, `/health` and outputs.
    pub fn id(&self) -> String {
        match (&self.model, &self.model_path) {
            (Some(id), _) => id.clone(),
            (None, Some(path)) => format!("file:{}", path.display()),
            (None, None) => "model".into(),
        }
    }

    /// Parses the id and opens the catalog (the given home or the default one), or takes the path.
    pub fn source(&self) -> Result<ModelOrigin, ModelArgsError> {
        match (&self.model, &self.model_path) {
            (Some(id), _) => {
                let parsed: CatalogId =
                    id.parse()
                        .map_err(|e: artifacts_contract::IdError| ModelArgsError::BadId {
                            id: id.clone(),
                            reason: e.to_string(),
                        })?;
                let parsed = catalog::ids::normalize(parsed);
                let catalog = match &self.catalog_home {
                    Some(home) => Catalog::open(home)?,
                    None => Catalog::open_default()?,
                };
                Ok(ModelOrigin::Catalog { id: parsed, catalog })
            }
            (None, Some(path)) => Ok(ModelOrigin::Path(path.clone())),
            (None, None) => Err(ModelArgsError::NoModel),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(model: Option<&str>, path: Option<&str>, home: Option<PathBuf>) -> ModelArgs {
        ModelArgs {
            model: model.map(String::from),
            model_path: path.map(PathBuf::from),
            catalog_home: home,
            device: "cpu".into(),
        }
    }

    #[test]
    fn a_path_is_taken_as_is_and_named_as_a_file_id() {
        let a = args(None, Some("/models/x.gguf"), None);
        assert!(
            matches!(a.source().unwrap(), ModelOrigin::Path(p) if p == std::path::Path::new("/models/x.gguf"))
        );
        assert_eq!(a.id(), "file:/models/x.gguf");
    }

    #[test]
    fn a_bad_id_is_named_before_any_catalog_is_opened() {
        let home = tempfile::tempdir().unwrap();
        let Err(err) = args(Some("nope"), None, Some(home.path().join("never"))).source() else {
            panic!("`nope` was taken as a catalog id");
        };
        assert!(err.to_string().contains("`nope` is not a catalog id"), "{err}");
        assert!(!home.path().join("never").exists());
    }

    #[test]
    fn an_id_opens_the_given_home() {
        let home = tempfile::tempdir().unwrap();
        let source = args(Some("hf:org/name"), None, Some(home.path().to_path_buf()))
            .source()
            .unwrap();
        match source {
            ModelOrigin::Catalog { id, catalog } => {
                assert_eq!(id.to_string(), "hf:org/name");
                assert_eq!(catalog.home(), home.path());
            }
            ModelOrigin::Path(path) => panic!("expected a catalog source, got {}", path.display()),
        }
    }
}
