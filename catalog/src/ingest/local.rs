//! Local files and folders: what a GGUF file, a safetensors file, a diffusers folder or an HF-style folder
//! is, given the folder's listing and the bytes the caller read.
//!
//! Sans-IO like the rest of `ingest`: [`plan_folder`] says which small files and which weight header to
//! read; the `entry_from_*` functions build the entry from what was read.

use artifacts_contract::{
    ArtifactStatus, CatalogId, ImageConfig, LlmConfig, ModelEntry, ModelFile, ModelSource, TypedConfig,
    WeightFormat,
};
use chrono::{DateTime, Utc};

use super::gguf::GgufHeader;
use super::hf::Sibling;
use super::hf_files::{self, FetchedFiles};
use super::repo_files;
use super::safetensors::SafetensorsHeader;
use super::{IngestError, role_of};

/// One file of a local folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    /// Path relative to the folder, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// The layouts of a local folder the catalog understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderLayout {
    /// A diffusers pipeline (`model_index.json`, or a `unet/` or `transformer/` config).
    Diffusers,
    /// A transformers-style model (`config.json` beside safetensors).
    HfModel,
    /// A folder holding one GGUF file.
    Gguf,
}

/// What to read from a folder before building its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderPlan {
    /// The layout found.
    pub layout: FolderLayout,
    /// Small files to read whole.
    pub metadata_files: Vec<String>,
    /// A weight file whose header to read (the GGUF, or the first safetensors shard).
    pub header_of: Option<String>,
}

/// Decides a folder's layout from its listing.
pub fn plan_folder(folder: &str, listing: &[LocalFile]) -> Result<FolderPlan, IngestError> {
    let has = |name: &str| listing.iter().any(|f| f.path == name);
    let metadata_files: Vec<String> = hf_files::METADATA_FILES
        .iter()
        .filter(|f| has(f))
        .map(|f| f.to_string())
        .collect();
    let top = |ext: &str| -> Vec<&LocalFile> {
        listing
            .iter()
            .filter(|f| !f.path.contains('/') && f.path.to_ascii_lowercase().ends_with(ext))
            .collect()
    };
    // A pipeline saved component by component may lack `model_index.json`; its denoiser's config marks it.
    if has("model_index.json") || has("unet/config.json") || has("transformer/config.json") {
        return Ok(FolderPlan {
            layout: FolderLayout::Diffusers,
            metadata_files,
            header_of: None,
        });
    }
    let safetensors = top(".safetensors");
    if has("config.json") && !safetensors.is_empty() {
        return Ok(FolderPlan {
            layout: FolderLayout::HfModel,
            metadata_files,
            header_of: safetensors.iter().map(|f| f.path.clone()).min(),
        });
    }
    match top(".gguf").as_slice() {
        [one] => Ok(FolderPlan {
            layout: FolderLayout::Gguf,
            metadata_files,
            header_of: Some(one.path.clone()),
        }),
        [] => Err(IngestError::Unrecognized(
            folder.into(),
            "the folder has no model_index.json, no config.json beside safetensors weights, and no GGUF file"
                .into(),
        )),
        many => Err(IngestError::Unrecognized(
            folder.into(),
            format!(
                "the folder holds several GGUF files ({}); add one of them by its path",
                many.iter()
                    .map(|f| f.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

fn local_entry(
    id: CatalogId,
    name: &str,
    path: &str,
    files: Vec<ModelFile>,
    config: TypedConfig,
    now: DateTime<Utc>,
) -> ModelEntry {
    ModelEntry {
        id,
        name: name.to_string(),
        author: None,
        source: ModelSource::Local,
        source_url: None,
        revision: None,
        path: Some(path.to_string()),
        size: files.iter().filter_map(|f| f.size).sum(),
        files,
        status: ArtifactStatus::Available,
        added_at: now,
        updated_at: now,
        config,
    }
}

fn stem(file_name: &str) -> &str {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
    base.rsplit_once('.').map_or(base, |(s, _)| s)
}

fn weight_file(file_name: &str, size: u64) -> ModelFile {
    ModelFile {
        path: file_name
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or(file_name)
            .to_string(),
        size: Some(size),
        sha256: None,
        role: artifacts_contract::FileRole::Weights,
        url: None,
    }
}

/// The entry of a single GGUF file at `path` (absolute), from its header.
pub fn entry_from_gguf(
    id: CatalogId,
    path: &str,
    size: u64,
    header: &GgufHeader,
    now: DateTime<Utc>,
) -> ModelEntry {
    let config = header.llm_config();
    let name = header
        .name()
        .map(str::to_string)
        .unwrap_or_else(|| stem(path).to_string());
    local_entry(
        id,
        &name,
        path,
        vec![weight_file(path, size)],
        TypedConfig::Llm(config),
        now,
    )
}

/// The entry of a single safetensors file at `path` (absolute), from its header and a `config.json`
/// found beside it.
pub fn entry_from_safetensors(
    id: CatalogId,
    path: &str,
    size: u64,
    header: &SafetensorsHeader,
    config_json: Option<&[u8]>,
    now: DateTime<Utc>,
) -> Result<ModelEntry, IngestError> {
    let cfg = config_json
        .map(|b| serde_json::from_slice(b).map_err(|e| IngestError::json("config.json", e)))
        .transpose()?;
    let config = header.recognize(cfg.as_ref()).ok_or_else(|| {
        IngestError::Unrecognized(
            path.into(),
            "its tensor names match no Stable Diffusion, Flux or LLM layout".into(),
        )
    })?;
    Ok(local_entry(
        id,
        stem(path),
        path,
        vec![weight_file(path, size)],
        config,
        now,
    ))
}

/// The entry of a folder at `path` (absolute), from its listing, the files [`plan_folder`] asked for,
/// and the header it named.
pub fn entry_from_folder(
    id: CatalogId,
    path: &str,
    listing: &[LocalFile],
    files: &FetchedFiles,
    gguf: Option<&GgufHeader>,
    safetensors: Option<&SafetensorsHeader>,
    now: DateTime<Utc>,
) -> Result<ModelEntry, IngestError> {
    let plan = plan_folder(path, listing)?;
    let siblings: Vec<Sibling> = listing
        .iter()
        .map(|f| Sibling {
            rfilename: f.path.clone(),
            size: Some(f.size),
            lfs: None,
        })
        .collect();
    let name = path
        .trim_end_matches(['/', '\\'])
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(path);
    let (config, chosen): (TypedConfig, Vec<&Sibling>) = match plan.layout {
        FolderLayout::Diffusers => {
            let c: ImageConfig = hf_files::image_config_from_diffusers(files, name)?;
            (TypedConfig::Image(c), repo_files::diffusers_files(&siblings))
        }
        FolderLayout::HfModel => {
            let mut c: LlmConfig = hf_files::llm_config_from_files(files, WeightFormat::Safetensors)?;
            if let Some(h) = safetensors {
                c.quantization = c.quantization.or_else(|| h.main_dtype());
            }
            (TypedConfig::Llm(c), repo_files::llm_files(&siblings, None))
        }
        FolderLayout::Gguf => {
            let file = plan.header_of.clone().unwrap_or_default();
            let mut c = gguf.map(GgufHeader::llm_config).unwrap_or_else(|| {
                LlmConfig::new(artifacts_contract::ModelFamily::Other, WeightFormat::Gguf)
            });
            if c.tokenizer.chat_template.is_none() {
                hf_files::apply_tokenizer_files(&mut c, files)?;
            }
            let chosen = siblings.iter().filter(|s| s.rfilename == file).collect();
            (TypedConfig::Llm(c), chosen)
        }
    };
    let model_files = chosen
        .into_iter()
        .map(|s| {
            let mut f = repo_files::model_file(s)?;
            f.role = role_of(&s.rfilename);
            Ok(f)
        })
        .collect::<Result<Vec<_>, IngestError>>()?;
    Ok(local_entry(id, name, path, model_files, config, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(names: &[&str]) -> Vec<LocalFile> {
        names
            .iter()
            .map(|n| LocalFile {
                path: n.to_string(),
                size: 10,
            })
            .collect()
    }

    #[test]
    fn folder_layouts_are_told_apart() {
        let d = plan_folder("x", &listing(&["model_index.json", "unet/config.json"])).unwrap();
        assert_eq!((d.layout, d.metadata_files.len()), (FolderLayout::Diffusers, 2));
        let h = plan_folder(
            "x",
            &listing(&["config.json", "model-2.safetensors", "model-1.safetensors"]),
        )
        .unwrap();
        assert_eq!(
            (h.layout, h.header_of.as_deref()),
            (FolderLayout::HfModel, Some("model-1.safetensors"))
        );
        let err = plan_folder("x", &listing(&["a.gguf", "b.gguf"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("several GGUF files (a.gguf, b.gguf)"), "{err}");
        let err = plan_folder("x", &listing(&["notes.txt"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot tell what x is"), "{err}");
    }
}
