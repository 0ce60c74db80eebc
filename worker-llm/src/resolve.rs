//! From a catalog id to the files to load: the catalog says whether the entry exists, is downloaded and
//! is compatible with this worker on this device (`WorkerCapabilities::worker_llm()`), and where it is.

use artifacts_contract::{CatalogId, WorkerCapabilities};
use candle_core::Device;
use catalog::Catalog;

use crate::error::Result;
use crate::files::ModelFiles;
use worker_model::device_kind;

/// The files of catalog entry `id`, checked against what this worker runs on `device`.
pub fn model_files(catalog: &Catalog, id: &CatalogId, device: &Device) -> Result<ModelFiles> {
    let worker = WorkerCapabilities::worker_llm();
    let resolved = catalog::resolve::resolve(catalog, id, &worker, Some(device_kind(device)))?;
    ModelFiles::from_paths(&resolved.root, resolved.files.into_iter().map(|(_, path)| path))
}
