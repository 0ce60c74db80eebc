//! The flags that choose a model and a device, shared by `generate` and `serve`: the shared ones of
//! every worker, and what a single-file image checkpoint may need beside it.

use std::path::PathBuf;

use anyhow::Context;
use worker_model::{ModelOrigin, device_kind};
use worker_sd::device::default_dtype;
use worker_sd::pipeline::{ImagePipeline, LoadOptions, ModelSource};

/// Which model to load, and where to run it.
#[derive(clap::Args, Debug, Clone)]
pub struct SdModelArgs {
    /// The model (a catalog id, or a diffusers folder or single-file `.safetensors` checkpoint) and device.
    #[command(flatten)]
    pub shared: worker_model::ModelArgs,
    /// For a single-file checkpoint: a diffusers folder whose configs and tokenizer describe it.
    #[arg(long)]
    pub config_folder: Option<PathBuf>,
    /// A separate VAE: a diffusers `vae/` folder or a `.safetensors` file.
    #[arg(long)]
    pub vae: Option<PathBuf>,
    /// A folder of textual-inversion embeddings (`.safetensors`), named in prompts by their file stems.
    #[arg(long)]
    pub embeddings: Option<PathBuf>,
}

impl SdModelArgs {
    /// The model's name as the catalog or the path gives it.
    pub fn name(&self) -> String {
        match (&self.shared.model, &self.shared.model_path) {
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

    /// [`SdModelArgs::load`], with the bytes of weights it read (for `/ready` and `/metrics`).
    pub fn load_sized(&self) -> anyhow::Result<(Box<dyn ImagePipeline>, u64)> {
        let device = self.shared.device()?;
        let mut options = LoadOptions::cpu(self.name());
        options.dtype = default_dtype(&device);
        options.device = device.clone();
        options.vae = self.vae.clone();
        let home = self
            .shared
            .catalog_home
            .clone()
            .or_else(|| std::env::var_os("CATALOG_HOME").map(PathBuf::from));
        let library = |home| worker_sd::lora::Library::new(home).with_embeddings_dir(self.embeddings.clone());
        options.loras = library(home);
        let (mut source, mut options) = match self.shared.source()? {
            ModelOrigin::Catalog { id, catalog } => {
                options.loras = library(Some(catalog.home().to_path_buf()));
                worker_sd::resolve::resolve(&catalog, &id, device_kind(&device), options)?
            }
            ModelOrigin::Path(path) if path.is_dir() => (ModelSource::Diffusers(path), options),
            ModelOrigin::Path(path) => (
                ModelSource::SingleFile {
                    path,
                    config: self.config_folder.clone(),
                },
                options,
            ),
        };
        // A catalog's single file (a Flux transformer) takes `--config-folder` as a path's does.
        if let ModelSource::SingleFile { config, .. } = &mut source
            && config.is_none()
        {
            config.clone_from(&self.config_folder);
        }
        // AUTOMATIC1111's `Model hash` of a single file, when the catalog did not publish one.
        if let ModelSource::SingleFile { path, .. } = &source
            && options.model_hash.is_none()
        {
            options.model_hash = worker_sd::lora::file_sha256(path).ok();
        }
        let name = options.model_name.clone();
        let bytes = worker_sd::loading::weights_size(source.path());
        // A GPU too small for the weights fails here, naming the need, before minutes of loading.
        let weights = std::iter::once(source.path()).chain(options.vae.as_deref());
        worker_sd::device::ensure_fits(weights, options.dtype, &options.device, &name)?;
        let pipeline =
            worker_sd::pipeline::load(&source, &options).with_context(|| format!("loading {name}"))?;
        Ok((pipeline, bytes))
    }
}
