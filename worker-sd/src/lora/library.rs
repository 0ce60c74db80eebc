//! Finding and reading adapter files: a path, or a catalog entry by id or by name, checked against the
//! model's base through the contract; files stay cached by path so a repeated request reads nothing.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use artifacts_contract::lora::{check_adapter, check_adapter_base};
use artifacts_contract::{CatalogId, CheckpointType, FileRole, ImageBase, ModelEntry, TypedConfig};
use candle_core::Device;
use sha2::{Digest, Sha256};

use super::{LoraFile, detect_base};
use crate::error::{Result, SdError};

/// Where LoRAs are looked up, and the files already read.
#[derive(Clone, Default)]
pub struct Library {
    catalog_home: Option<PathBuf>,
    cache: Arc<Mutex<HashMap<PathBuf, Arc<LoraFile>>>>,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("catalog_home", &self.catalog_home)
            .finish()
    }
}

fn invalid(message: String) -> SdError {
    SdError::invalid("loras", message)
}

impl Library {
    /// Paths only, or also the entries of the catalog at `catalog_home`.
    pub fn new(catalog_home: Option<PathBuf>) -> Self {
        Library {
            catalog_home,
            cache: Arc::default(),
        }
    }

    /// The adapter `name` (a path, a catalog id or a LoRA entry's name) for a `model` model.
    pub fn resolve(&self, name: &str, model: ImageBase) -> Result<Arc<LoraFile>> {
        let path = Path::new(name);
        let (path, catalog_base) = if path.extension().is_some_and(|e| e != "safetensors") || path.is_file() {
            (path.to_path_buf(), ImageBase::Other)
        } else {
            self.catalog_entry(name, model)?
        };
        crate::loading::refuse_pickle(&path)?;
        let file = self.read(&path, name)?;
        check_adapter_base(name, CheckpointType::Lora, file.base, model)
            .map_err(|e| invalid(e.to_string()))?;
        check_adapter_base(name, CheckpointType::Lora, catalog_base, model)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(file)
    }

    fn read(&self, path: &Path, name: &str) -> Result<Arc<LoraFile>> {
        let key = path.to_path_buf();
        if let Some(file) = self
            .cache
            .lock()
            .map_err(|_| invalid("LoRA cache poisoned".into()))?
            .get(&key)
        {
            return Ok(file.clone());
        }
        if !path.is_file() {
            return Err(invalid(format!("no LoRA file {}", path.display())));
        }
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        let file = Arc::new(LoraFile {
            name: name.to_string(),
            path: key.clone(),
            short_hash: addnet_hash(path)?[..12].to_string(),
            base: detect_base(&tensors),
            tensors,
        });
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, file.clone());
        }
        Ok(file)
    }

    /// A catalog LoRA entry's weights file and base, by id or by name.
    fn catalog_entry(&self, name: &str, model: ImageBase) -> Result<(PathBuf, ImageBase)> {
        let home = self.catalog_home.as_ref().ok_or_else(|| {
            invalid(format!(
                "no LoRA file {name}, and no catalog to look it up in (give --catalog-home)"
            ))
        })?;
        let catalog =
            catalog::Catalog::open(home).map_err(|e| invalid(format!("opening the catalog: {e}")))?;
        let entry: Option<ModelEntry> = match name.parse::<CatalogId>() {
            Ok(id) => catalog.get(&id).map_err(|e| invalid(e.to_string()))?,
            Err(_) => None,
        };
        let entry = match entry {
            Some(entry) => entry,
            None => catalog
                .search(name)
                .map_err(|e| invalid(e.to_string()))?
                .into_iter()
                .find(|e| e.name.eq_ignore_ascii_case(name))
                .ok_or_else(|| invalid(format!("no LoRA {name} in the catalog at {}", home.display())))?,
        };
        let TypedConfig::Image(config) = &entry.config else {
            return Err(invalid(format!("{name} is not an image adapter")));
        };
        check_adapter(name, config, CheckpointType::Lora, model).map_err(|e| invalid(e.to_string()))?;
        if !entry.status.is_available() {
            return Err(invalid(format!(
                "LoRA {name} is not downloaded; run `catalog pull {}`",
                entry.id
            )));
        }
        let root = catalog::resolve::entry_root(&entry)
            .ok_or_else(|| invalid(format!("LoRA {name}: the entry records no folder")))?;
        let weights = entry
            .files
            .iter()
            .find(|f| f.role == FileRole::Weights && f.path.ends_with(".safetensors"))
            .ok_or_else(|| invalid(format!("LoRA {name} has no .safetensors weights")))?;
        Ok((root.join(&weights.path), config.base))
    }
}

/// The SHA-256 of a safetensors file's tensor data, after its header (kohya's and AUTOMATIC1111's
/// "addnet" hash of LoRAs).
pub fn addnet_hash(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| SdError::io(path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| SdError::io(path, e))?;
    file.seek(SeekFrom::Start(8 + u64::from_le_bytes(len)))
        .map_err(|e| SdError::io(path, e))?;
    hash_rest(file, path)
}

/// The SHA-256 of a whole file, as hex (AUTOMATIC1111's model hash is its first 10 digits).
pub fn file_sha256(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).map_err(|e| SdError::io(path, e))?;
    hash_rest(file, path)
}

fn hash_rest(mut file: std::fs::File, path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(|e| SdError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
