//! The models of a pipeline with a LoRA set merged: built from copies of the base tensors where only the
//! adapted weights are new, the last set kept so a run of requests with the same LoRAs merges once, and
//! the plain models handed back untouched for a request without LoRAs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};

use super::{ActiveLora, LoraReport, Target, TensorMap};
use crate::error::Result;

/// The last LoRA set's models `M`, by the set's key (paths and weights).
pub struct Merged<M> {
    last: Mutex<Option<(String, Arc<M>)>>,
}

impl<M> Default for Merged<M> {
    fn default() -> Self {
        Merged {
            last: Mutex::new(None),
        }
    }
}

impl<M> Merged<M> {
    /// `plain` when `loras` is empty; else the models `build` makes from `targets`' tensor maps with
    /// `loras` merged (one map per target, in order), reusing the last set's when it is the same.
    pub fn models_for(
        &self,
        plain: &Arc<M>,
        targets: &[Target<'_>],
        loras: &[ActiveLora],
        build: impl FnOnce(&[TensorMap]) -> Result<M>,
    ) -> Result<(Arc<M>, Vec<LoraReport>)> {
        if loras.is_empty() {
            return Ok((plain.clone(), Vec::new()));
        }
        let key = super::set_key(loras);
        let cached = self.last.lock().ok().and_then(|a| a.clone());
        // The reports are cheap to recompute (names only); the merge is what the cache saves.
        if let Some((cached_key, models)) = cached
            && cached_key == key
        {
            return Ok((models, super::reports(targets, loras)));
        }
        let (maps, reports) = super::patch(targets, loras)?;
        let models = Arc::new(build(&maps)?);
        if let Ok(mut last) = self.last.lock() {
            *last = Some((key, models.clone()));
        }
        Ok((models, reports))
    }
}

/// No module aliases (every component but SDXL's UNet).
pub fn no_aliases() -> &'static HashMap<String, String> {
    static NONE: std::sync::OnceLock<HashMap<String, String>> = std::sync::OnceLock::new();
    NONE.get_or_init(HashMap::new)
}

/// No sliced modules (every component but Flux's transformer).
pub fn no_slices() -> &'static super::Slices {
    static NONE: std::sync::OnceLock<super::Slices> = std::sync::OnceLock::new();
    NONE.get_or_init(HashMap::new)
}

/// A component's tensors moved to `device` in `dtype`, as a pipeline keeps them: the models are built
/// from these same tensors, so keeping them for LoRAs costs no second copy. On the CPU in float32 the
/// linear weights are laid out column-major for the GEMM ([`crate::cpu::linear::kept_layout`]; same
/// shapes and values); embedding tables keep their rows.
pub fn cast(map: HashMap<String, Tensor>, dtype: DType, device: &Device) -> Result<TensorMap> {
    map.into_iter()
        .map(|(k, v)| {
            let v = crate::cpu::linear::kept_layout(&k, v.to_device(device)?.to_dtype(dtype)?)?;
            Ok((k, v))
        })
        .collect()
}
