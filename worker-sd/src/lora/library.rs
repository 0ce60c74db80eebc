//! Finding and reading adapter files: a path, or a catalog entry by id or by name, checked against the
//! model's base through the contract; files stay cached by path so a repeated request reads nothing.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use artifacts_contract::lora::{check_adapter, check_adapter_base};
use artifacts_contract::{
    CatalogId, CheckpointType, FileRole, ImageBase, ModelEntry, ModelType, TypedConfig,
};
use candle_core::Device;
use sha2::{Digest, Sha256};

use super::{LoraFile, detect_base};
use crate::embeddings::{self, ActiveEmbedding, EmbeddingFile};
use crate::error::{Result, SdError};

/// Where LoRAs and embeddings are looked up, and the files already read.
#[derive(Clone, Default)]
pub struct Library {
    catalog_home: Option<PathBuf>,
    embeddings_dir: Option<PathBuf>,
    cache: Arc<Mutex<HashMap<PathBuf, Arc<LoraFile>>>>,
    embeddings: Arc<Mutex<HashMap<PathBuf, Arc<EmbeddingFile>>>>,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("catalog_home", &self.catalog_home)
            .field("embeddings_dir", &self.embeddings_dir)
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
            ..Library::default()
        }
    }

    /// Also the embeddings of a folder, named by their file stems (AUTOMATIC1111's `embeddings/`).
    pub fn with_embeddings_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.embeddings_dir = dir;
        self
    }

    /// The adapter `name` (a path, a catalog id or a LoRA entry's name) for a `model` model.
    pub fn resolve(&self, name: &str, model: ImageBase) -> Result<Arc<LoraFile>> {
        let path = Path::new(name);
        // A file named by its path goes by its stem in the PNG (as AUTOMATIC1111 names LoRAs): no local
        // paths in images, and the tag works in a UI that has the file.
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        let (path, catalog_base, label) =
            if path.extension().is_some_and(|e| e != "safetensors") || path.is_file() {
                (
                    path.to_path_buf(),
                    ImageBase::Other,
                    stem.unwrap_or_else(|| name.to_string()),
                )
            } else {
                let catalog = self.open_catalog(name, "LoRA")?;
                let entry = find_entry(&catalog, name, CheckpointType::Lora)?.ok_or_else(|| {
                    invalid(format!(
                        "no LoRA {name} in the catalog at {}",
                        catalog.home().display()
                    ))
                })?;
                let (path, base) = entry_file(&entry, name, CheckpointType::Lora, model)?;
                (path, base, name.to_string())
            };
        crate::loading::refuse_pickle(&path)?;
        let file = self.read(&path, &label)?;
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
        let tensors = crate::loading::read_safetensors(path, &Device::Cpu)?;
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

    fn open_catalog(&self, name: &str, what: &str) -> Result<catalog::Catalog> {
        let home = self.catalog_home.as_ref().ok_or_else(|| {
            invalid(format!(
                "no {what} file {name}, and no catalog to look it up in (give --catalog-home)"
            ))
        })?;
        catalog::Catalog::open(home).map_err(|e| invalid(format!("opening the catalog: {e}")))
    }

    /// The embeddings that words of `prompts` name for a `model` model: `embedding:NAME` must name one
    /// (a path, a file of the embeddings folder, a catalog id or entry name); a bare word names one when
    /// the embeddings folder has a file of that stem or the catalog an embedding entry of that name or id.
    pub fn embeddings_in(&self, prompts: &[&str], model: ImageBase) -> Result<Vec<ActiveEmbedding>> {
        let mut words: Vec<&str> = prompts.iter().flat_map(|p| embeddings::candidates(p)).collect();
        words.sort_unstable_by_key(|w| w.to_lowercase());
        words.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        let folder = self.embeddings_folder()?;
        // Opened at the first word the folder does not hold; its embedding entries listed once, so a
        // prompt costs one catalog query, not one per word.
        let mut catalog: Option<(catalog::Catalog, HashMap<String, ModelEntry>)> = None;
        let mut found = Vec::new();
        for word in words {
            let explicit = embeddings::explicit(word).is_some();
            let name = embeddings::explicit(word).unwrap_or(word);
            let path = Path::new(name);
            let located =
                if explicit && (path.is_file() || path.extension().is_some_and(|e| e != "safetensors")) {
                    Some((path.to_path_buf(), ImageBase::Other))
                } else if let Some(path) = folder.get(&name.to_lowercase()) {
                    Some((path.clone(), ImageBase::Other))
                } else if self.catalog_home.is_some() {
                    if catalog.is_none() {
                        let opened = self.open_catalog(name, "embedding")?;
                        let filter = catalog::Filter {
                            model_type: Some(ModelType::Image),
                            ..catalog::Filter::default()
                        };
                        let entries = opened.list(&filter).map_err(|e| invalid(e.to_string()))?;
                        let by_name = entries
                            .into_iter()
                            .filter(|e| is_kind(e, CheckpointType::Embedding))
                            .map(|e| (e.name.to_lowercase(), e))
                            .collect();
                        catalog = Some((opened, by_name));
                    }
                    let (opened, by_name) = catalog.as_ref().expect("opened");
                    // A bare word names an embedding entry by its name, or any entry by its id.
                    let entry = if explicit || name.parse::<CatalogId>().is_ok() {
                        find_entry(opened, name, CheckpointType::Embedding)?
                    } else {
                        by_name.get(&name.to_lowercase()).cloned()
                    };
                    entry
                        .map(|e| entry_file(&e, name, CheckpointType::Embedding, model))
                        .transpose()?
                } else {
                    None
                };
            let Some((path, catalog_base)) = located else {
                if explicit {
                    return Err(invalid_embedding(format!(
                        "no embedding {name} (not a file, not in the embeddings folder{})",
                        if self.catalog_home.is_some() {
                            " or the catalog"
                        } else {
                            ""
                        }
                    )));
                }
                continue;
            };
            let file = self.read_embedding(&path)?;
            for base in [file.base, catalog_base] {
                check_adapter_base(name, CheckpointType::Embedding, base, model)
                    .map_err(|e| invalid_embedding(e.to_string()))?;
            }
            found.push(ActiveEmbedding {
                word: word.to_string(),
                file,
            });
        }
        Ok(found)
    }

    /// The embeddings folder's files by lower-cased stem (pickle files too, so naming one is refused).
    fn embeddings_folder(&self) -> Result<HashMap<String, PathBuf>> {
        let Some(dir) = &self.embeddings_dir else {
            return Ok(HashMap::new());
        };
        let entries = std::fs::read_dir(dir).map_err(|e| SdError::io(dir, e))?;
        let mut files = HashMap::new();
        for path in entries.flatten().map(|e| e.path()) {
            let weights = path.extension().is_some_and(|e| e == "safetensors")
                || crate::loading::refuse_pickle(&path).is_err();
            if let (true, Some(stem)) = (weights, path.file_stem()) {
                files.insert(stem.to_string_lossy().to_lowercase(), path);
            }
        }
        Ok(files)
    }

    fn read_embedding(&self, path: &Path) -> Result<Arc<EmbeddingFile>> {
        crate::loading::refuse_pickle(path)?;
        if let Some(file) = self.embeddings.lock().ok().and_then(|c| c.get(path).cloned()) {
            return Ok(file);
        }
        let file = Arc::new(EmbeddingFile::read(path)?);
        if let Ok(mut cache) = self.embeddings.lock() {
            cache.insert(path.to_path_buf(), file.clone());
        }
        Ok(file)
    }
}

fn invalid_embedding(message: String) -> SdError {
    SdError::invalid("embeddings", message)
}

fn is_kind(entry: &ModelEntry, kind: CheckpointType) -> bool {
    matches!(&entry.config, TypedConfig::Image(c) if c.checkpoint_type == kind)
}

/// A catalog entry by id, else by name (case-insensitive; an entry of `kind` first).
fn find_entry(catalog: &catalog::Catalog, name: &str, kind: CheckpointType) -> Result<Option<ModelEntry>> {
    if let Ok(id) = name.parse::<CatalogId>()
        && let Some(entry) = catalog.get(&id).map_err(|e| invalid(e.to_string()))?
    {
        return Ok(Some(entry));
    }
    let mut named: Vec<ModelEntry> = catalog
        .search(name)
        .map_err(|e| invalid(e.to_string()))?
        .into_iter()
        .filter(|e| e.name.eq_ignore_ascii_case(name))
        .collect();
    named.sort_by_key(|e| !is_kind(e, kind));
    Ok(named.into_iter().next())
}

/// A catalog adapter entry's weights file and base, checked as a `kind` for a `model` model.
fn entry_file(
    entry: &ModelEntry,
    name: &str,
    kind: CheckpointType,
    model: ImageBase,
) -> Result<(PathBuf, ImageBase)> {
    let field = if kind == CheckpointType::Lora {
        "loras"
    } else {
        "embeddings"
    };
    let bad = |message: String| SdError::invalid(field, message);
    let TypedConfig::Image(config) = &entry.config else {
        return Err(bad(format!("{name} is not an image adapter")));
    };
    check_adapter(name, config, kind, model).map_err(|e| bad(e.to_string()))?;
    if !entry.status.is_available() {
        return Err(bad(format!(
            "{kind} {name} is not downloaded; run `catalog pull {}`",
            entry.id
        )));
    }
    let root = catalog::resolve::entry_root(entry)
        .ok_or_else(|| bad(format!("{kind} {name}: the entry records no folder")))?;
    if let Some(pickle) = entry.pickle_files().next()
        && !entry
            .files
            .iter()
            .any(|f| f.role == FileRole::Weights && f.path.ends_with(".safetensors"))
    {
        return Err(SdError::Pickle {
            path: root.join(&pickle.path),
        });
    }
    let weights = entry
        .files
        .iter()
        .find(|f| f.role == FileRole::Weights && f.path.ends_with(".safetensors"))
        .ok_or_else(|| bad(format!("{kind} {name} has no .safetensors weights")))?;
    Ok((root.join(&weights.path), config.base))
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
