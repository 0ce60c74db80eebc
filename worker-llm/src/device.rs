//! The dtype unquantized weights use on a device, and whether a model fits it; parsing `--device` is
//! `worker_model::parse_device`.

use candle_core::{DType, Device};
use worker_model::gpu_memory::{self, MemoryError};

use crate::ModelFiles;

/// f32 on CPU (exact, and what the references use), bf16 on CUDA, f16 on Metal.
pub fn default_dtype(device: &Device) -> DType {
    match device {
        Device::Cpu => DType::F32,
        Device::Cuda(_) => DType::BF16,
        Device::Metal(_) => DType::F16,
    }
}

/// What a model needs on a GPU beside its weights: Candle's CUDA context, cuBLAS workspaces and a first
/// stretch of KV cache (which grows with use and is not counted beyond this).
pub const RUNTIME_BYTES: u64 = 512 << 20;

/// The device memory a model needs at least: GGUF weights as stored (Candle's CUDA kernels read the
/// quantized blocks), safetensors at [`default_dtype`], plus [`RUNTIME_BYTES`]. Read from file sizes
/// and headers, without loading anything.
pub fn memory_need(files: &ModelFiles, device: &Device) -> Result<u64, MemoryError> {
    let weights = match &files.gguf {
        Some(gguf) => std::fs::metadata(gguf).map_or(0, |m| m.len()),
        None => files
            .safetensors
            .iter()
            .map(|f| gpu_memory::safetensors_bytes_as(f, default_dtype(device)))
            .sum::<Result<u64, _>>()?,
    };
    Ok(weights + RUNTIME_BYTES)
}

/// Fails before loading, naming the need, when the model does not fit the GPU's free memory; the CPU
/// always passes.
pub fn ensure_fits(files: &ModelFiles, device: &Device, what: &str) -> Result<(), MemoryError> {
    gpu_memory::ensure_fits(device, what, || memory_need(files, device))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_need_counts_gguf_as_stored_and_safetensors_at_the_device_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let st = dir.path().join("model.safetensors");
        let w = candle_core::Tensor::zeros((8, 16), DType::F32, &Device::Cpu).unwrap();
        candle_core::safetensors::save(&[("w", w)].into_iter().collect(), &st).unwrap();
        let files = ModelFiles {
            safetensors: vec![st],
            ..Default::default()
        };
        // f32 on the CPU: 128 floats of 4 bytes.
        assert_eq!(
            memory_need(&files, &Device::Cpu).unwrap(),
            128 * 4 + RUNTIME_BYTES
        );

        let gguf = dir.path().join("m.gguf");
        std::fs::write(&gguf, vec![0u8; 1000]).unwrap();
        let files = ModelFiles {
            gguf: Some(gguf),
            ..Default::default()
        };
        assert_eq!(memory_need(&files, &Device::Cpu).unwrap(), 1000 + RUNTIME_BYTES);
        assert!(ensure_fits(&files, &Device::Cpu, "m").is_ok());
    }
}
