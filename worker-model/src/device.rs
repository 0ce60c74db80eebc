//! `--device cpu|cuda:N|metal` to a Candle device: one parser for every worker, so the names they
//! accept and the messages they give agree.

use artifacts_contract::DeviceKind;
use candle_core::Device;

/// A device name that is not `cpu`, `cuda:N` or `metal`, or one this build or machine cannot open.
#[derive(Debug, thiserror::Error)]
#[error("device `{device}`: {reason}")]
pub struct DeviceError {
    /// What was asked for.
    pub device: String,
    /// Why it cannot be used.
    pub reason: String,
}

/// Parses a device name and opens the device; names the cargo feature when the build lacks it.
///
/// Whether the build has CUDA or Metal is Candle's to say: a worker's `cuda` feature turns on
/// `candle-core/cuda`, so this crate needs no feature of its own.
pub fn parse_device(name: &str) -> Result<Device, DeviceError> {
    let err = |reason: String| DeviceError {
        device: name.to_string(),
        reason,
    };
    let (kind, index) = match name.split_once(':') {
        Some((kind, index)) => (
            kind,
            index
                .parse::<usize>()
                .map_err(|_| err(format!("`{index}` is not a device number")))?,
        ),
        None => (name, 0),
    };
    let built = match kind {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => candle_core::utils::cuda_is_available(),
        "metal" => candle_core::utils::metal_is_available(),
        _ => return Err(err("expected cpu, cuda:N or metal".into())),
    };
    if !built {
        return Err(err(format!(
            "this build has no {kind} support: rebuild with `--features {kind}`"
        )));
    }
    let opened = match kind {
        "cuda" => Device::new_cuda(index),
        _ => Device::new_metal(index),
    };
    opened.map_err(|e| err(e.to_string()))
}

/// The contract's name for the kind of a device, for compatibility checks and `/health`.
pub fn device_kind(device: &Device) -> DeviceKind {
    match device {
        Device::Cpu => DeviceKind::Cpu,
        Device::Cuda(_) => DeviceKind::Cuda,
        Device::Metal(_) => DeviceKind::Metal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_parses_and_bad_names_are_explained() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        let tpu = parse_device("tpu").unwrap_err().to_string();
        assert!(
            tpu.contains("`tpu`") && tpu.contains("expected cpu, cuda:N or metal"),
            "{tpu}"
        );
        let bad = parse_device("cuda:x").unwrap_err().to_string();
        assert!(bad.contains("`x` is not a device number"), "{bad}");
        assert_eq!(device_kind(&Device::Cpu), DeviceKind::Cpu);
    }

    #[test]
    fn a_gpu_this_build_lacks_names_the_feature() {
        if !candle_core::utils::cuda_is_available() {
            let cuda = parse_device("cuda:0").unwrap_err().to_string();
            assert!(cuda.contains("--features cuda"), "{cuda}");
        }
        if !candle_core::utils::metal_is_available() {
            let metal = parse_device("metal").unwrap_err().to_string();
            assert!(metal.contains("--features metal"), "{metal}");
        }
    }
}
