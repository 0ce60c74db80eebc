//! Whether a model fits a GPU, checked before loading it: a load that runs out of device memory
//! halfway fails with a bare CUDA error after minutes of reading; this names the need and the free
//! memory at once. The driver is asked only in a build with the `cuda` feature (cudarc's
//! `cuMemGetInfo`, through Candle's device); the CPU and Metal (unified memory) always pass.

use std::path::Path;

use candle_core::{DType, Device, DeviceLocation};

/// A model that needs more device memory than is free, or what kept the need or the free memory unknown.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The estimate exceeds what the device has free.
    #[error(
        "{what} needs about {need} of GPU memory, but {device} has {free} free of {total}: free memory on \
         that GPU (other processes hold the rest), pick another with `--device cuda:N`, or use a smaller \
         or more quantized model"
    )]
    TooLittle {
        /// The model, as the user named it.
        what: String,
        /// The device, e.g. `cuda:0`.
        device: String,
        /// The estimate.
        need: Bytes,
        /// Free bytes.
        free: Bytes,
        /// Total bytes.
        total: Bytes,
    },
    /// The driver did not say how much memory is free.
    #[error("could not read the free memory of {device}: {reason}")]
    Query {
        /// The device.
        device: String,
        /// The driver's error.
        reason: String,
    },
    /// A weights file whose header cannot be read, so its size on the device is unknown.
    #[error("{path}: {reason}")]
    Header {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A byte count that prints as GiB or MiB, so that messages read at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl std::fmt::Display for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 >= 1 << 30 {
            write!(f, "{:.1} GiB", self.0 as f64 / (1u64 << 30) as f64)
        } else {
            write!(f, "{:.0} MiB", self.0 as f64 / (1u64 << 20) as f64)
        }
    }
}

/// The device's name as `--device` spells it (`cuda:1`), for messages.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        DeviceLocation::Cpu => "cpu".into(),
        DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Free and total bytes of a CUDA device's memory; `None` on the CPU and Metal.
pub fn free_and_total(device: &Device) -> Result<Option<(u64, u64)>, MemoryError> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(cuda) => {
            let (free, total) =
                cuda.cuda_stream()
                    .context()
                    .mem_get_info()
                    .map_err(|e| MemoryError::Query {
                        device: device_name(device),
                        reason: e.to_string(),
                    })?;
            Ok(Some((free as u64, total as u64)))
        }
        _ => Ok(None),
    }
}

/// Fails, naming the need, when the bytes `need` estimates exceed what a CUDA `device` has free; the
/// estimate (which reads weight headers) is made only for CUDA devices. CPU and Metal always pass.
pub fn ensure_fits(
    device: &Device,
    what: &str,
    need: impl FnOnce() -> Result<u64, MemoryError>,
) -> Result<(), MemoryError> {
    match free_and_total(device)? {
        Some((free, total)) => check_fits(what, &device_name(device), need()?, free, total),
        None => Ok(()),
    }
}

/// The comparison itself, apart from the driver so that it is tested without a GPU.
pub fn check_fits(what: &str, device: &str, need: u64, free: u64, total: u64) -> Result<(), MemoryError> {
    if need <= free {
        return Ok(());
    }
    Err(MemoryError::TooLittle {
        what: what.to_string(),
        device: device.to_string(),
        need: Bytes(need),
        free: Bytes(free),
        total: Bytes(total),
    })
}

/// The bytes a `.safetensors` file's tensors take once loaded with their floating-point tensors in
/// `float` (integer tensors keep their type), read from the header alone.
pub fn safetensors_bytes_as(path: &Path, float: DType) -> Result<u64, MemoryError> {
    let header = catalog::sources::local::read_safetensors_header(path).map_err(|e| MemoryError::Header {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut total = 0u64;
    for (name, info) in &header.tensors {
        let size = match info.dtype.as_str() {
            "F64" | "F32" | "F16" | "BF16" | "F8_E4M3" | "F8_E5M2" => float.size_in_bytes() as u64,
            "I64" | "U64" => 8,
            "I32" | "U32" => 4,
            "I16" | "U16" => 2,
            "I8" | "U8" | "BOOL" => 1,
            other => {
                return Err(MemoryError::Header {
                    path: path.display().to_string(),
                    reason: format!("tensor `{name}` has the unknown dtype `{other}`"),
                });
            }
        };
        total = total.saturating_add(info.shape.iter().product::<u64>().saturating_mul(size));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_little_memory_names_the_need_and_the_free() {
        assert!(check_fits("m", "cuda:0", 10, 10, 20).is_ok());
        let err = check_fits("hf:org/big", "cuda:1", 40 << 30, 3 << 30, 24 << 30)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hf:org/big needs about 40.0 GiB")
                && err.contains("cuda:1 has 3.0 GiB free of 24.0 GiB"),
            "{err}"
        );
        assert_eq!(Bytes(512 << 20).to_string(), "512 MiB");
    }

    #[test]
    fn the_cpu_always_fits() {
        let unreadable = || -> Result<u64, MemoryError> { panic!("the CPU needs no estimate") };
        assert!(ensure_fits(&Device::Cpu, "m", unreadable).is_ok());
        assert_eq!(free_and_total(&Device::Cpu).unwrap(), None);
        assert_eq!(device_name(&Device::Cpu), "cpu");
    }

    #[test]
    fn safetensors_size_follows_the_target_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let tensors = [
            (
                "a",
                candle_core::Tensor::zeros((3, 4), DType::F32, &Device::Cpu).unwrap(),
            ),
            (
                "b",
                candle_core::Tensor::zeros(5, DType::U8, &Device::Cpu).unwrap(),
            ),
        ];
        candle_core::safetensors::save(&tensors.into_iter().collect(), &path).unwrap();
        assert_eq!(safetensors_bytes_as(&path, DType::F32).unwrap(), 12 * 4 + 5);
        assert_eq!(safetensors_bytes_as(&path, DType::F16).unwrap(), 12 * 2 + 5);

        std::fs::write(&path, b"junk").unwrap();
        let err = safetensors_bytes_as(&path, DType::F16).unwrap_err().to_string();
        assert!(err.contains("w.safetensors"), "{err}");
    }
}
