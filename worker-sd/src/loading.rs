//! Reading model files safely: configs with the bad field named, safetensors only (pickle is refused
//! before anything is opened), and the weight file of a diffusers component folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
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
    Ok(candle_core::safetensors::load(path, device)?)
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
    fn a_folder_with_only_pickle_weights_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("diffusion_pytorch_model.bin"), b"not really").unwrap();
        assert!(matches!(
            component_weights(dir.path()),
            Err(SdError::Pickle { .. })
        ));
    }
}
