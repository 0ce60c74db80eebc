//! The dtype the models run in on a device, and whether a pipeline fits it; parsing `--device` is
//! `worker_model::parse_device`.

use std::path::Path;

use candle_core::{DType, Device};
use worker_model::gpu_memory::{self, MemoryError};

/// f32 on CPU (what the references use), f16 on GPUs (SD's UNet and VAE are trained for it; Flux turns
/// it into bf16, and SDXL's VAE runs in f32 where its config says f16 overflows).
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cpu() { DType::F32 } else { DType::F16 }
}

/// Activations beside the weights: about 1 GiB for a UNet at 512x512; larger images and Flux need more,
/// which is not counted here (the check catches the plainly hopeless cases before loading).
pub const ACTIVATION_BYTES: u64 = 1 << 30;

/// The device memory a pipeline needs at least: the `.safetensors` weights at `paths` (files or diffusers
/// folders) at `dtype`, read from their headers, plus [`ACTIVATION_BYTES`].
pub fn memory_need<'a>(paths: impl IntoIterator<Item = &'a Path>, dtype: DType) -> Result<u64, MemoryError> {
    let mut weights = 0;
    for path in paths {
        for file in crate::loading::weights_files(path) {
            weights += gpu_memory::safetensors_bytes_as(&file, dtype)?;
        }
    }
    Ok(weights + ACTIVATION_BYTES)
}

/// Fails before loading, naming the need, when the pipeline does not fit the GPU's free memory; the CPU
/// always passes.
pub fn ensure_fits<'a>(
    paths: impl IntoIterator<Item = &'a Path>,
    dtype: DType,
    device: &Device,
    what: &str,
) -> Result<(), MemoryError> {
    gpu_memory::ensure_fits(device, what, || memory_need(paths, dtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_need_counts_weights_at_the_device_dtype() {
        let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sd/tiny-sd15");
        let f32 = memory_need([tiny.as_path()], DType::F32).unwrap() - ACTIVATION_BYTES;
        let f16 = memory_need([tiny.as_path()], DType::F16).unwrap() - ACTIVATION_BYTES;
        // Every float tensor halves; integer tensors (position ids) keep their size.
        assert!(f32 > 0 && f16 < f32 && f16 * 2 >= f32, "f32 {f32}, f16 {f16}");
        assert!(ensure_fits([tiny.as_path()], DType::F32, &Device::Cpu, "tiny").is_ok());
    }
}
