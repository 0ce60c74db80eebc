//! The flags that choose a model and a device, shared by every subcommand that loads one.

use std::path::PathBuf;

use anyhow::Context;
use artifacts_contract::CatalogId;
use candle_core::Device;
use worker_llm::{Engine, ModelFiles, parse_device};

/// Which model to load, and where to run it.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// A catalog id (`hf:org/name:file`, `file:PATH`...), resolved in the catalog home.
    #[arg(long, conflicts_with = "model_path", required_unless_present = "model_path")]
    pub model: Option<String>,
    /// A `.gguf` file, a `.safetensors` file or a model folder, loaded directly (for development).
    #[arg(long)]
    pub model_path: Option<PathBuf>,
    /// The catalog home (default: `CATALOG_HOME`, else the platform's data directory).
    #[arg(long)]
    pub catalog_home: Option<PathBuf>,
    /// `cpu`, `cuda:N` (feature `cuda`) or `metal` (feature `metal`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ModelArgs {
    /// Opens the device, finds the files and loads the model.
    pub fn load(&self) -> anyhow::Result<Engine> {
        let (id, files, device) = self.resolve()?;
        Engine::load(&files, &device).with_context(|| format!("loading {id}"))
    }

    /// Opens the device and finds the files, without loading them: the model's catalog id (`file:PATH`
    /// for `--model-path`), its files and the device.
    pub fn resolve(&self) -> anyhow::Result<(String, ModelFiles, Device)> {
        let device = parse_device(&self.device)?;
        let (files, id) = match (&self.model, &self.model_path) {
            (Some(id), _) => {
                let id: CatalogId = id
                    .parse()
                    .with_context(|| format!("`{id}` is not a catalog id"))?;
                let home = match &self.catalog_home {
                    Some(home) => home.clone(),
                    None => catalog::home::default_home()?,
                };
                let catalog = catalog::Catalog::open(&home)
                    .with_context(|| format!("opening the catalog at {}", home.display()))?;
                (
                    worker_llm::resolve::model_files(&catalog, &id, &device)?,
                    id.to_string(),
                )
            }
            (None, Some(path)) => (ModelFiles::discover(path)?, format!("file:{}", path.display())),
            (None, None) => anyhow::bail!("give --model ID or --model-path PATH"),
        };
        Ok((id, files, device))
    }
}
