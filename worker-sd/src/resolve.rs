//! From a catalog id to what to load: the catalog says whether the entry exists, is downloaded and is
//! compatible with this worker on this device (`WorkerCapabilities::worker_sd()`); its `ImageConfig`
//! gives the base, prediction type, VAE and defaults.

use artifacts_contract::{
    CatalogId, DeviceKind, FileRole, ImageConfig, ModelConfig, TypedConfig, WorkerCapabilities,
};
use catalog::Catalog;

use crate::error::{Result, SdError};
use crate::pipeline::{LoadOptions, ModelSource};
use crate::request::Defaults;

/// The folders of a diffusers pipeline that hold its denoiser.
const DENOISER_FOLDERS: &[&str] = &["unet", "transformer"];

/// The files of catalog entry `id` and the load options its config implies; `options` brings the
/// device and dtype.
pub fn resolve(
    catalog: &Catalog,
    id: &CatalogId,
    device: DeviceKind,
    options: LoadOptions,
) -> Result<(ModelSource, LoadOptions)> {
    let worker = WorkerCapabilities::worker_sd();
    let resolved = catalog::resolve::resolve(catalog, id, &worker, Some(device))?;
    let TypedConfig::Image(config) = &resolved.entry.config else {
        return Err(SdError::layout(
            &resolved.root,
            format!("{id} is not an image model"),
        ));
    };
    let root = &resolved.root;
    // The entry's own file list and roles decide, not a look at the disk: a diffusers folder is one whose
    // files include its components, and its `vae/` is part of it; a VAE file outside `vae/` (CivitAI
    // ships them beside a checkpoint) replaces the model's, as `--vae` does.
    let in_component = |path: &str, component: &str| path.split('/').next() == Some(component);
    let diffusers = resolved.entry.files.iter().any(|f| {
        f.path == "model_index.json"
            || DENOISER_FOLDERS
                .iter()
                .any(|c| in_component(&f.path, c) && f.role == FileRole::Weights)
    });
    let source = if diffusers {
        ModelSource::Diffusers(root.clone())
    } else {
        let weights = resolved.paths_with_role(FileRole::Weights);
        let path = match weights.as_slice() {
            [one] => one.to_path_buf(),
            _ => {
                return Err(SdError::layout(
                    root,
                    format!(
                        "expected a diffusers folder or one weights file, found {} weights files",
                        weights.len()
                    ),
                ));
            }
        };
        ModelSource::SingleFile { path, config: None }
    };
    let model_hash = match &source {
        ModelSource::SingleFile { path, .. } => resolved
            .files
            .iter()
            .find(|(_, p)| p == path)
            .and_then(|(f, _)| f.sha256.clone()),
        ModelSource::Diffusers(_) => None,
    };
    let vae = resolved
        .files
        .iter()
        .find(|(f, _)| f.role == FileRole::Vae && !(diffusers && in_component(&f.path, "vae")))
        .map(|(_, path)| path.clone());
    Ok((
        source,
        LoadOptions {
            base: Some(config.base),
            prediction_type: config.prediction_type,
            vae: options.vae.clone().or(vae),
            model_name: resolved.entry.name.clone(),
            defaults: Some(defaults(config)),
            model_hash,
            ..options
        },
    ))
}

/// A catalog entry's recommended settings as request defaults.
pub fn defaults(config: &ImageConfig) -> Defaults {
    let params = config.inference_params();
    let scheduler = params
        .sampler
        .filter(|name| crate::schedulers::find(name).is_ok())
        .unwrap_or_else(|| "Euler".to_string());
    Defaults {
        size: (params.resolution.width, params.resolution.height),
        steps: params.steps,
        cfg_scale: params.cfg_scale,
        scheduler,
        clip_skip: params.clip_skip.max(1),
    }
}
