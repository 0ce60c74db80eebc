//! The dtype unquantized weights use on a device; parsing `--device` is `worker_model::parse_device`.

use candle_core::{DType, Device};

/// f32 on CPU (exact, and what the references use), bf16 on CUDA, f16 on Metal.
pub fn default_dtype(device: &Device) -> DType {
    match device {
        Device::Cpu => DType::F32,
        Device::Cuda(_) => DType::BF16,
        Device::Metal(_) => DType::F16,
    }
}
