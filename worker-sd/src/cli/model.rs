//! The flags that choose a model and a device, shared by `generate` and `serve`.

use std::path::PathBuf;

use anyhow::Context;
use artifacts_contract::CatalogId;
use worker_sd::device::{default_dtype, device_kind, parse_device};
use worker_sd::pipeline::{ImagePipeline, LoadOptions, ModelSource};

/// Which model to load, and where to run it.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// A catalog id (`hf:org/name`, `civitai:ID`, `file:PATH`), resolved in the catalog home.
    #[arg(long, conflicts_with = "model_path", required_unless_present = "model_path")]
    pub model: Option<String>,
    /// A diffusers folder or a single-file `.safetensors` checkpoint, loaded directly (for development).
    #[arg(long)]
    pub model_path: Option<PathBuf>,
    /// For a single-file checkpoint: a diffusers folder whose configs and tokenizer describe it.
    #[arg(long)]
    pub config_folder: Option<PathBuf>,
    /// A separate VAE: a diffusers `vae/` folder or a `.safetensors` file.
    #[arg(long)]
    pub vae: Option<PathBuf>,
    /// The catalog home (default: `CATALOG_HOME`, else the platform's data directory).
    #[arg(long)]
    pub catalog_home: Option<PathBuf>,
    /// `cpu`, `cuda:N` (feature `cuda`) or `metal` (feature `metal`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ModelArgs {
    /// The model's name as the catalog or the path gives it.
    pub fn name(&self) -> String {
        match (&self.model, &self.model_path) {
            (Some(id), _) => id.clone(),
            (None, Some(path)) => path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            (None, None) => "model".into(),
        }
    }

    /// Opens the device, finds the files and loads the pipeline.
    pub fn load(&self) -> anyhow::Result<Box<dyn ImagePipeline>> {
        Ok(self.load_sized()?.0)
    }

    /// [`ModelArgs::load`], with the bytes of weights it read (for `/ready` and `/metrics`).
    pub fn load_sized(&self) -> anyhow::Result<(Box<dyn ImagePipeline>, u64)> {
        let device = parse_device(&self.device)?;
        let mut options = LoadOptions::cpu(self.name());
        options.dtype = default_dtype(&device);
        options.device = device.clone();
        options.vae = self.vae.clone();
        let (mut source, options) = match (&self.model, &self.model_path) {
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
                worker_sd::resolve::resolve(&catalog, &id, device_kind(&device), options)?
            }
            (None, Some(path)) if path.is_dir() => (ModelSource::Diffusers(path.clone()), options),
            (None, Some(path)) => (
                ModelSource::SingleFile {
                    path: path.clone(),
                    config: self.config_folder.clone(),
                },
                options,
            ),
            (None, None) => anyhow::bail!("give --model ID or --model-path PATH"),
        };
        // A catalog's single file (a Flux transformer) takes `--config-folder` as a path's does.
        if let ModelSource::SingleFile { config, .. } = &mut source
            && config.is_none()
        {
            config.clone_from(&self.config_folder);
        }
        let name = options.model_name.clone();
        let bytes = worker_sd::loading::weights_size(source.path());
        let pipeline =
            worker_sd::pipeline::load(&source, &options).with_context(|| format!("loading {name}"))?;
        Ok((pipeline, bytes))
    }
}
