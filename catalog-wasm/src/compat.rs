//! Worker compatibility for JavaScript: the contract's `compat::check`, nothing recomputed here.

use artifacts_contract::ModelEntry;
use artifacts_contract::compat::{self, Compatibility, DeviceKind, WorkerCapabilities, WorkerKind};
use tsify::Ts;
use wasm_bindgen::prelude::*;

use crate::error::{from_js, to_js};

/// `checkCompatibility(entry, device?)`: for each worker this project ships, whether it runs the
/// entry, why not, and the memory it would need.
#[wasm_bindgen(js_name = checkCompatibility)]
pub fn check_compatibility(
    entry: Ts<ModelEntry>,
    device: Option<Ts<DeviceKind>>,
) -> Result<Vec<Ts<Compatibility>>, JsError> {
    let entry = from_js(&entry, "ModelEntry")?;
    let device = device.map(|d| from_js(&d, "DeviceKind")).transpose()?;
    let answers = WorkerKind::ALL
        .iter()
        .map(|kind| compat::check(&entry, &WorkerCapabilities::builtin(*kind), device));
    Ok(answers.map(|c| to_js(&c)).collect::<Result<_, _>>()?)
}

/// `checkWorker(entry, capabilities, device?)`: the answer for one worker build, e.g. one that
/// reported its own capabilities over HTTP.
#[wasm_bindgen(js_name = checkWorker)]
pub fn check_worker(
    entry: Ts<ModelEntry>,
    capabilities: Ts<WorkerCapabilities>,
    device: Option<Ts<DeviceKind>>,
) -> Result<Ts<Compatibility>, JsError> {
    let entry = from_js(&entry, "ModelEntry")?;
    let capabilities = from_js(&capabilities, "WorkerCapabilities")?;
    let device = device.map(|d| from_js(&d, "DeviceKind")).transpose()?;
    Ok(to_js(&compat::check(&entry, &capabilities, device))?)
}

/// `workerCapabilities(kind)`: what a worker kind declares it runs, to show beside the answers.
#[wasm_bindgen(js_name = workerCapabilities)]
pub fn worker_capabilities(kind: Ts<WorkerKind>) -> Result<Ts<WorkerCapabilities>, JsError> {
    let kind = from_js(&kind, "WorkerKind")?;
    Ok(to_js(&WorkerCapabilities::builtin(kind))?)
}
