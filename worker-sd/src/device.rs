//! The dtype the models run in on a device; parsing `--device` is `worker_model::parse_device`.

use candle_core::{DType, Device};

/// f32 on CPU (what the references use), f16 on GPUs (SD's UNet and VAE are trained for it).
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cpu() { DType::F32 } else { DType::F16 }
}
