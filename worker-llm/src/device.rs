//! `--device cpu|cuda:N|metal` to a Candle device, and the dtype unquantized weights use on it.

use artifacts_contract::DeviceKind;
use candle_core::{DType, Device};

use crate::error::{LlmError, Result};

/// Parses a device name and opens the device; names the cargo feature when the build lacks it.
pub fn parse_device(name: &str) -> Result<Device> {
    let err = |reason: String| LlmError::Device {
        device: name.to_string(),
        reason,
    };
    let (kind, index) = match name.split_once(':') {
        Some((k, i)) => (
            k,
            i.parse::<usize>()
                .map_err(|_| err(format!("`{i}` is not a device number")))?,
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
        _ => Err(err("expected cpu, cuda:N or metal".into())),
    }
}

/// The contract's name for the kind of a device, for compatibility checks.
pub fn device_kind(device: &Device) -> DeviceKind {
    match device {
        Device::Cpu => DeviceKind::Cpu,
        Device::Cuda(_) => DeviceKind::Cuda,
        Device::Metal(_) => DeviceKind::Metal,
    }
}

/// f32 on CPU (exact, and what the references use), bf16 on CUDA, f16 on Metal.
pub fn default_dtype(device: &Device) -> DType {
    match device {
        Device::Cpu => DType::F32,
        Device::Cuda(_) => DType::BF16,
        Device::Metal(_) => DType::F16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_parses_and_bad_names_are_explained() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(
            parse_device("tpu")
                .unwrap_err()
                .to_string()
                .contains("expected cpu, cuda:N or metal")
        );
        assert!(
            parse_device("cuda:x")
                .unwrap_err()
                .to_string()
                .contains("not a device number")
        );
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_names_the_feature() {
        assert!(
            parse_device("cuda:0")
                .unwrap_err()
                .to_string()
                .contains("--features cuda")
        );
    }
}
