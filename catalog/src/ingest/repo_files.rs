//! Which files of a repository or folder make up a model: the GGUF file a quantization names, the
//! weights and support files of a transformers model, the components of a diffusers pipeline.
//!
//! Shared by the Hub source and local folders, which both describe their files as [`Sibling`]s.

use artifacts_contract::{FileRole, ModelFile};

use super::gguf;
use super::hf::Sibling;
use super::{IngestError, is_weight_name, role_of, safe_path};

/// Quantization names as llama.cpp writes them, for reading them out of file names.
fn known_quants() -> impl Iterator<Item = &'static str> {
    (0..64).filter_map(gguf::file_type_name)
}

/// The quantization a GGUF file name carries (`qwen2.5-0.5b-instruct-q4_k_m.gguf` -> `Q4_K_M`).
pub fn quant_of_file_name(name: &str) -> Option<String> {
    let file = name.rsplit('/').next().unwrap_or(name).to_ascii_uppercase();
    file.split(['-', '.'])
        .find(|token| known_quants().any(|q| q == *token))
        .map(str::to_string)
}

/// A split GGUF shard name as llama.cpp's `gguf-split` writes it (`m-Q4_K_M-00001-of-00003.gguf`):
/// the name before the shard number, the shard number and the shard count.
pub fn gguf_split(name: &str) -> Option<(&str, u32, u32)> {
    let stem = name
        .strip_suffix(".gguf")
        .or_else(|| name.strip_suffix(".GGUF"))?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, index) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(index) || !digits(count) {
        return None;
    }
    let (index, count): (u32, u32) = (index.parse().ok()?, count.parse().ok()?);
    (1..=count).contains(&index).then_some((prefix, index, count))
}

/// True for the GGUF files a user chooses between: single files and the first shard of a split model
/// (the other shards come with it, see [`gguf_parts`]).
pub fn is_gguf_choice(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".gguf") && gguf_split(name).is_none_or(|(_, index, _)| index == 1)
}

/// Every file of the GGUF model `chosen` names, in shard order: `chosen` alone for a single file, all
/// shards of a split model; an error names a split model whose shards are not all listed.
pub fn gguf_parts<'a>(repo: &str, chosen: &str, names: &[&'a str]) -> Result<Vec<&'a str>, IngestError> {
    let Some((prefix, _, count)) = gguf_split(chosen) else {
        return Ok(names.iter().copied().filter(|n| *n == chosen).collect());
    };
    let mut parts: Vec<(u32, &str)> = names
        .iter()
        .filter_map(|n| match gguf_split(n) {
            Some((p, index, c)) if p == prefix && c == count => Some((index, *n)),
            _ => None,
        })
        .collect();
    parts.sort_unstable();
    parts.dedup_by_key(|(index, _)| *index);
    if parts.len() != count as usize {
        return Err(IngestError::NoMatch {
            repo: repo.into(),
            wanted: format!("all {count} shards of {chosen}"),
            choices: parts.iter().map(|(_, n)| n.to_string()).collect(),
        });
    }
    Ok(parts.into_iter().map(|(_, n)| n).collect())
}

/// Picks the GGUF file a selector names (a path or a quantization, as llama.cpp and Ollama accept), or
/// the default (Q4_K_M, then other common 4- to 8-bit quants) when none is named.
pub fn select_gguf(repo: &str, ggufs: &[&str], wanted: Option<&str>) -> Result<String, IngestError> {
    let choices = || ggufs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    if ggufs.is_empty() {
        return Err(IngestError::NoMatch {
            repo: repo.into(),
            wanted: wanted.unwrap_or("a GGUF file").into(),
            choices: Vec::new(),
        });
    }
    let Some(wanted) = wanted else {
        if let [only] = ggufs {
            return Ok(only.to_string());
        }
        for q in [
            "Q4_K_M", "Q4_K_S", "Q5_K_M", "Q4_0", "Q8_0", "Q6_K", "F16", "BF16",
        ] {
            let hits: Vec<&&str> = ggufs
                .iter()
                .filter(|f| quant_of_file_name(f).as_deref() == Some(q))
                .collect();
            if let [one] = hits.as_slice() {
                return Ok(one.to_string());
            }
        }
        return Err(IngestError::AmbiguousGguf {
            repo: repo.into(),
            wanted: None,
            choices: choices(),
        });
    };
    if wanted.contains('.') || wanted.contains('/') {
        return ggufs
            .iter()
            .find(|f| **f == wanted)
            .map(|f| f.to_string())
            .ok_or_else(|| IngestError::NoMatch {
                repo: repo.into(),
                wanted: wanted.into(),
                choices: choices(),
            });
    }
    let upper = wanted.to_ascii_uppercase();
    let exact: Vec<&&str> = ggufs
        .iter()
        .filter(|f| quant_of_file_name(f).as_deref() == Some(upper.as_str()))
        .collect();
    let hits = if exact.is_empty() {
        ggufs
            .iter()
            .filter(|f| {
                f.to_ascii_uppercase()
                    .split(['-', '.', '/'])
                    .any(|t| t.starts_with(&upper))
            })
            .collect()
    } else {
        exact
    };
    match hits.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(IngestError::NoMatch {
            repo: repo.into(),
            wanted: wanted.into(),
            choices: choices(),
        }),
        many => Err(IngestError::AmbiguousGguf {
            repo: repo.into(),
            wanted: Some(wanted.into()),
            choices: many.iter().map(|s| s.to_string()).collect(),
        }),
    }
}

pub(crate) fn model_file(s: &Sibling) -> Result<ModelFile, IngestError> {
    Ok(ModelFile {
        path: safe_path(&s.rfilename)?,
        size: s.lfs.as_ref().and_then(|l| l.size).or(s.size),
        sha256: s.lfs.as_ref().map(|l| l.sha256.to_ascii_lowercase()),
        role: role_of(&s.rfilename),
        url: None,
    })
}

/// Files a text model in safetensors needs: top-level weights (shards over a consolidated copy), the
/// shard index, configs and tokenizer files; pickle weights only when there is nothing else.
pub(crate) fn llm_files<'a>(siblings: &'a [Sibling], only: Option<&str>) -> Vec<&'a Sibling> {
    let top: Vec<&Sibling> = siblings.iter().filter(|s| !s.rfilename.contains('/')).collect();
    let safetensors: Vec<&Sibling> = top
        .iter()
        .copied()
        .filter(|s| s.rfilename.ends_with(".safetensors"))
        .filter(|s| only.is_none_or(|o| o == s.rfilename))
        .collect();
    let has_model_files = safetensors.iter().any(|s| s.rfilename.starts_with("model"));
    let mut weights: Vec<&Sibling> = safetensors
        .into_iter()
        .filter(|s| !(has_model_files && s.rfilename.starts_with("consolidated")))
        .collect();
    if weights.is_empty() {
        weights = top
            .iter()
            .copied()
            .filter(|s| s.rfilename.starts_with("pytorch_model") && s.rfilename.ends_with(".bin"))
            .collect();
    }
    let support = top.iter().copied().filter(|s| {
        let n = s.rfilename.as_str();
        let role = role_of(n);
        matches!(role, FileRole::Tokenizer | FileRole::ChatTemplate)
            || (role == FileRole::Config && !n.starts_with("pytorch_model"))
            || n == "model.safetensors.index.json"
    });
    weights.into_iter().chain(support).collect()
}

/// Files of a diffusers pipeline: configs and tokenizers of every component, and per component one set
/// of weights (safetensors without a dtype variant, else a variant, else pickle).
pub(crate) fn diffusers_files(siblings: &[Sibling]) -> Vec<&Sibling> {
    let mut out = Vec::new();
    let mut by_folder: std::collections::BTreeMap<&str, Vec<&Sibling>> = Default::default();
    let has_index = siblings.iter().any(|s| s.rfilename == "model_index.json");
    for s in siblings {
        match s.rfilename.split_once('/') {
            Some((folder, rest)) if !rest.contains('/') => by_folder.entry(folder).or_default().push(s),
            None if s.rfilename == "model_index.json" => out.push(s),
            None if !is_weight_name(&s.rfilename) => {}
            None if has_index => {}
            // A repo of single-file weights (LoRAs, embeddings): keep the safetensors at the top.
            None => {
                if s.rfilename.ends_with(".safetensors") {
                    out.push(s)
                }
            }
            Some(_) => {}
        }
    }
    for files in by_folder.values() {
        out.extend(files.iter().copied().filter(|s| !is_weight_name(&s.rfilename)));
        let st: Vec<&Sibling> = files
            .iter()
            .copied()
            .filter(|s| s.rfilename.ends_with(".safetensors"))
            .collect();
        let plain: Vec<&Sibling> = st
            .iter()
            .copied()
            .filter(|s| !has_variant(&s.rfilename))
            .collect();
        let chosen = if !plain.is_empty() {
            plain
        } else if !st.is_empty() {
            st
        } else {
            files
                .iter()
                .copied()
                .filter(|s| s.rfilename.ends_with(".bin"))
                .take(1)
                .collect()
        };
        out.extend(chosen);
    }
    out
}

/// `diffusion_pytorch_model.fp16.safetensors` has a dtype variant; `model.safetensors` does not.
fn has_variant(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.trim_end_matches(".safetensors").contains('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn siblings(files: &[&str]) -> Vec<Sibling> {
        files
            .iter()
            .map(|f| Sibling {
                rfilename: f.to_string(),
                size: None,
                lfs: None,
            })
            .collect()
    }

    #[test]
    fn quant_selection_follows_llama_cpp_names() {
        let files = ["m-Q4_K_M.gguf", "m-Q4_K_S.gguf", "m-Q8_0.gguf"];
        assert_eq!(select_gguf("o/r", &files, Some("q8_0")).unwrap(), "m-Q8_0.gguf");
        assert_eq!(select_gguf("o/r", &files, None).unwrap(), "m-Q4_K_M.gguf");
        let err = select_gguf("o/r", &files, Some("Q4_K")).unwrap_err().to_string();
        assert!(err.contains("m-Q4_K_M.gguf, m-Q4_K_S.gguf"), "{err}");
        let err = select_gguf("o/r", &files, Some("Q2_K")).unwrap_err().to_string();
        assert!(
            err.contains("no file or quantization \"Q2_K\"") && err.contains("m-Q8_0.gguf"),
            "{err}"
        );
        let err = select_gguf("o/r", &["a-Q5_0.gguf", "a-Q5_1.gguf"], None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pick one with hf:o/r:QUANT, e.g. hf:o/r:Q5_0"),
            "{err}"
        );
    }

    #[test]
    fn a_split_gguf_is_one_choice_with_all_its_shards() {
        let names = [
            "m-Q8_0.gguf",
            "big/m-Q4_K_M-00002-of-00003.gguf",
            "big/m-Q4_K_M-00001-of-00003.gguf",
            "big/m-Q4_K_M-00003-of-00003.gguf",
            "README.md",
        ];
        let choices: Vec<&str> = names.iter().copied().filter(|n| is_gguf_choice(n)).collect();
        assert_eq!(choices, ["m-Q8_0.gguf", "big/m-Q4_K_M-00001-of-00003.gguf"]);
        let chosen = select_gguf("o/r", &choices, Some("Q4_K_M")).unwrap();
        assert_eq!(
            gguf_parts("o/r", &chosen, &names).unwrap(),
            [
                "big/m-Q4_K_M-00001-of-00003.gguf",
                "big/m-Q4_K_M-00002-of-00003.gguf",
                "big/m-Q4_K_M-00003-of-00003.gguf"
            ]
        );
        assert_eq!(gguf_parts("o/r", "m-Q8_0.gguf", &names).unwrap(), ["m-Q8_0.gguf"]);
        let err = gguf_parts("o/r", &chosen, &names[..3]).unwrap_err().to_string();
        assert!(err.contains("all 3 shards"), "{err}");
        assert_eq!(gguf_split("x-00000-of-00002.gguf"), None);
        assert_eq!(gguf_split("x-1-of-2.gguf"), None);
    }

    #[test]
    fn diffusers_components_prefer_plain_safetensors() {
        let info = siblings(&[
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/diffusion_pytorch_model.bin",
            "v1-5-pruned.ckpt",
        ]);
        let names: Vec<&str> = diffusers_files(&info)
            .iter()
            .map(|s| s.rfilename.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "model_index.json",
                "unet/config.json",
                "unet/diffusion_pytorch_model.safetensors"
            ]
        );
    }
}
