//! `--device cpu|cuda:N|metal` to a Candle device, and the dtype the models run in there.

use artifacts_contract::DeviceKind;
use candle_core::{DType, Device};

use crate::error::{Result, SdError};

/// Parses a device name and opens it; names the cargo feature when the build lacks it.
pub fn parse_device(name: &str) -> Result<Device> {
    let err = |message: String| SdError::invalid("device", message);
    let (kind, index) = match name.split_once(':') {
        Some((kind, index)) => (
            kind,
            index
                .parse::<usize>()
                .map_err(|_| err(format!("`{index}` is not a device number")))?,
        ),
        None => (name, 0),
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" if cfg!(feature = "cuda") => Device::new_cuda(index).map_err(|e| err(e.to_string())),
        "metal" if cfg!(feature = "metal") => Device::new_metal(index).map_err(|e| err(e.to_string())),
        "cuda" | "metal" => Err(err(format!(
            "this build has no {kind} support: rebuild with `--features {kind}`"
        ))),
        _ => Err(err(format!("`{name}`: expected cpu, cuda:N or metal"))),
    }
}

/// The contract's name for a device's kind, for compatibility checks.
pub fn device_kind(device: &Device) -> DeviceKind {
    match device {
        Device::Cpu => DeviceKind::Cpu,
        Device::Cuda(_) => DeviceKind::Cuda,
        Device::Metal(_) => DeviceKind::Metal,
    }
}

/// f32 on CPU (what the references use), f16 on GPUs (SD's UNet and VAE are trained for it).
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cpu() { DType::F32 } else { DType::F16 }
}
