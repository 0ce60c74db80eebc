//! Reading model files safely: configs with the bad field named, safetensors only (pickle is refused
//! before anything is opened), and the weight file of a diffusers component folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::de::DeserializeOwned;

use crate::error::{Result, SdError};

/// Fails with [`SdError::Pickle`] when `path` is a pickle file (the contract's one list of extensions).
pub fn refuse_pickle(path: &Path) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    if artifacts_contract::weights::is_pickle_name(&name) {
        return Err(SdError::Pickle {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Parses a JSON config file.
pub fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| SdError::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| SdError::Config {
        path: path.to_path_buf(),
        source,
    })
}

/// The safetensors weights of a diffusers component folder (`unet/`, `vae/`, `text_encoder/`):
/// `diffusion_pytorch_model.safetensors` or `model.safetensors`, else the only `.safetensors` there
/// (`*.fp16.safetensors` variants included). A folder with only pickle weights is refused by name.
pub fn component_weights(folder: &Path) -> Result<PathBuf> {
    for name in ["diffusion_pytorch_model.safetensors", "model.safetensors"] {
        if folder.join(name).is_file() {
            return Ok(folder.join(name));
        }
    }
    let entries = std::fs::read_dir(folder).map_err(|e| SdError::io(folder, e))?;
    let mut safetensors = Vec::new();
    let mut pickles = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            safetensors.push(path);
        } else if refuse_pickle(&path).is_err() {
            pickles.push(path);
        }
    }
    safetensors.sort();
    match (safetensors.into_iter().next(), pickles.into_iter().next()) {
        (Some(path), _) => Ok(path),
        (None, Some(path)) => Err(SdError::Pickle { path }),
        (None, None) => Err(SdError::layout(folder, "no .safetensors weights in this folder")),
    }
}

/// Every tensor of a safetensors file, memory-mapped and read onto `device`.
pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    refuse_pickle(path)?;
    if !path.is_file() {
        return Err(SdError::layout(path, "no such weights file"));
    }
    Ok(read_safetensors(path, device)?)
}

/// Every tensor of a safetensors file, each read from the file straight into its own buffer, one after
/// the other, then moved to `device`. Candle's `safetensors::load` reads the whole file into memory
/// first and copies each tensor out of it, so loading a model peaked at twice its weights (7 GB for SD
/// 1.5's 3.4 GB UNet); here the peak is the weights plus nothing. Files with a dtype other than
/// F32/F16/BF16/F64/U8/U32/I64 (and big-endian hosts) go through Candle's loader.
pub fn read_safetensors(path: &Path, device: &Device) -> candle_core::Result<HashMap<String, Tensor>> {
    use std::io::{Read, Seek, SeekFrom};
    let bad = |message: String| candle_core::Error::Msg(format!("{}: {message}", path.display()));
    let mut file = std::fs::File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len)?;
    let header_len = u64::from_le_bytes(len);
    if header_len > 100 << 20 || 8 + header_len > file_len {
        return Err(bad(format!(
            "not a safetensors file (header of {header_len} bytes)"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("bad safetensors header: {e}")))?;
    let mut entries = Vec::with_capacity(header.len());
    for (name, value) in header {
        if name == "__metadata__" {
            continue;
        }
        let entry: HeaderEntry =
            serde_json::from_value(value).map_err(|e| bad(format!("tensor {name}: {e}")))?;
        let Some(dtype) = dtype_of(&entry.dtype).filter(|_| cfg!(target_endian = "little")) else {
            return candle_core::safetensors::load(path, device);
        };
        let (start, end) = entry.data_offsets;
        let elements = entry.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let bytes = elements.and_then(|n| n.checked_mul(dtype.size_in_bytes()));
        if end < start
            || bytes != Some((end - start) as usize)
            || (8 + header_len).saturating_add(end) > file_len
        {
            return Err(bad(format!(
                "tensor {name}: {:?} {} does not fit bytes {start}..{end}",
                entry.shape, entry.dtype
            )));
        }
        entries.push((name, dtype, entry.shape, 8 + header_len + start));
    }
    entries.sort_by_key(|e| e.3);
    let mut tensors = HashMap::with_capacity(entries.len());
    for (name, dtype, shape, offset) in entries {
        file.seek(SeekFrom::Start(offset))?;
        let tensor = match dtype {
            DType::F32 => read_tensor::<f32>(&mut file, &shape, device)?,
            DType::F16 => read_tensor::<half::f16>(&mut file, &shape, device)?,
            DType::BF16 => read_tensor::<half::bf16>(&mut file, &shape, device)?,
            DType::F64 => read_tensor::<f64>(&mut file, &shape, device)?,
            DType::U8 => read_tensor::<u8>(&mut file, &shape, device)?,
            DType::U32 => read_tensor::<u32>(&mut file, &shape, device)?,
            _ => read_tensor::<i64>(&mut file, &shape, device)?,
        };
        tensors.insert(name, tensor);
    }
    Ok(tensors)
}

/// One tensor's entry in a safetensors header.
#[derive(serde::Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// The dtypes [`read_safetensors`] reads itself, by their safetensors names.
fn dtype_of(name: &str) -> Option<DType> {
    Some(match name {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" => DType::F64,
        "U8" => DType::U8,
        "U32" => DType::U32,
        "I64" => DType::I64,
        _ => return None,
    })
}

/// Reads `shape`'s elements of `T` (little-endian, as the host) from `file`'s current position.
fn read_tensor<T: candle_core::WithDType>(
    file: &mut std::fs::File,
    shape: &[usize],
    device: &Device,
) -> candle_core::Result<Tensor> {
    use std::io::Read;
    let n = shape.iter().product::<usize>();
    let mut data = vec![T::from_f64(0.0); n];
    // SAFETY: T is one of the plain number types above (no padding, every bit pattern a valid value),
    // so its elements may be written as bytes; the slice covers exactly the vector's n elements.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(&data[..]))
    };
    file.read_exact(bytes)?;
    Tensor::from_vec(data, shape, device)
}

/// The bytes of `.safetensors` files at `path` (a file, or a folder two levels deep), for memory reports.
pub fn weights_size(path: &Path) -> u64 {
    weights_files(path)
        .iter()
        .map(|f| f.metadata().map_or(0, |m| m.len()))
        .sum()
}

/// The `.safetensors` files at `path`: the file itself, or those of a folder two levels deep.
pub fn weights_files(path: &Path) -> Vec<PathBuf> {
    fn walk(path: &Path, depth: u32, found: &mut Vec<PathBuf>) {
        if path.is_file() {
            if path.extension().is_some_and(|e| e == "safetensors") {
                found.push(path.to_path_buf());
            }
        } else if let (0..=2, Ok(entries)) = (depth, std::fs::read_dir(path)) {
            entries.flatten().for_each(|e| walk(&e.path(), depth + 1, found));
        }
    }
    let mut found = Vec::new();
    walk(path, 0, &mut found);
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pickle_extensions_are_refused_by_name() {
        for name in [
            "model.ckpt",
            "x/pytorch_model.bin",
            "a.PT",
            "b.pth",
            "c.pkl",
            "vae/d.pickle",
        ] {
            let err = refuse_pickle(Path::new(name)).unwrap_err();
            assert!(matches!(err, SdError::Pickle { .. }), "{name}");
            assert!(err.to_string().contains("pickle"), "{err}");
        }
        refuse_pickle(Path::new("model.safetensors")).unwrap();
    }

    #[test]
    fn safetensors_read_as_candle_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 24., &dev)
            .unwrap()
            .reshape((2, 3, 4))
            .unwrap();
        let tensors = HashMap::from([
            ("a".to_string(), a.clone()),
            ("b".to_string(), a.to_dtype(DType::F16).unwrap()),
            (
                "c".to_string(),
                a.to_dtype(DType::BF16).unwrap().flatten_all().unwrap(),
            ),
            ("d".to_string(), Tensor::new(&[7u32, 9], &dev).unwrap()),
            ("e".to_string(), Tensor::new(3.5f64, &dev).unwrap()),
        ]);
        candle_core::safetensors::save(&tensors, &path).unwrap();
        let ours = read_safetensors(&path, &dev).unwrap();
        let theirs = candle_core::safetensors::load(&path, &dev).unwrap();
        assert_eq!(ours.len(), 5);
        for (name, t) in &theirs {
            let o = &ours[name];
            assert_eq!((o.dtype(), o.dims()), (t.dtype(), t.dims()), "{name}");
            let same = o
                .eq(t)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap();
            assert_eq!(same.min(0).unwrap().to_scalar::<f32>().unwrap(), 1.0, "{name}");
        }
    }

    #[test]
    fn a_truncated_safetensors_file_is_an_error_naming_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let t = Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
        candle_core::safetensors::save(&HashMap::from([("w".to_string(), t)]), &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let err = read_safetensors(&path, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("tensor w"), "{err}");
        std::fs::write(&path, b"\xff\xff\xff\xff\xff\xff\xff\x7fjunk").unwrap();
        let err = read_safetensors(&path, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("not a safetensors file"), "{err}");
    }

    #[test]
    fn a_folder_with_only_pickle_weights_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("diffusion_pytorch_model.bin"), b"not really").unwrap();
        assert!(matches!(
            component_weights(dir.path()),
            Err(SdError::Pickle { .. })
        ));
    }
}
