//! Following the shared model flags (`worker_model::ModelArgs`) to a model's files and a device.

use anyhow::Context;
use candle_core::Device;
use worker_llm::{Engine, ModelFiles};
use worker_model::{ModelArgs, ModelOrigin};

/// Opens the device, finds the files and loads the model.
pub fn load(args: &ModelArgs) -> anyhow::Result<Engine> {
    let (id, files, device) = resolve(args)?;
    Engine::load(&files, &device).with_context(|| format!("loading {id}"))
}

/// Opens the device and finds the files, without loading them: the model's catalog id (`file:PATH`
/// for `--model-path`), its files and the device. A GPU too small for the model fails here, naming the
/// need, before minutes of loading.
pub fn resolve(args: &ModelArgs) -> anyhow::Result<(String, ModelFiles, Device)> {
    let device = args.device()?;
    let files = match args.source()? {
        ModelOrigin::Catalog { id, catalog } => worker_llm::resolve::model_files(&catalog, &id, &device)?,
        ModelOrigin::Path(path) => ModelFiles::discover(&path)?,
    };
    worker_llm::device::ensure_fits(&files, &device, &args.id())?;
    Ok((args.id(), files, device))
}
