//! Catalog ids for JavaScript: the contract's parser and formatter, with the parts as a typed object.

use artifacts_contract::{CatalogId, Selector};
use serde::{Deserialize, Serialize};
use tsify::{Ts, Tsify};
use wasm_bindgen::prelude::*;

use crate::error::{WasmError, from_js, to_js};

/// A catalog id taken apart, because JavaScript cannot match on the contract's `CatalogId` enum
/// (which crosses the boundary as its string form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(tag = "scheme", rename_all = "lowercase", rename_all_fields = "camelCase")]
pub enum CatalogIdParts {
    /// `hf:ORG/NAME[@REVISION][:SELECTOR]`.
    Hf {
        /// `org/name`.
        repo: String,
        /// Branch, tag or commit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[tsify(optional)]
        revision: Option<String>,
        /// A file path or quantization name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[tsify(optional)]
        selector: Option<String>,
        /// What the selector names (ignored on input: it is read from the selector itself).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[tsify(optional)]
        selector_kind: Option<SelectorKind>,
    },
    /// `civitai:MODEL_ID[@VERSION_ID]`.
    Civitai {
        /// The model id.
        model: u64,
        /// The version id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[tsify(optional)]
        version: Option<u64>,
    },
    /// `file:PATH`.
    File {
        /// The local path.
        path: String,
    },
}

/// Whether an `hf:` selector names a file or a quantization, so the UI need not guess from the string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "lowercase")]
pub enum SelectorKind {
    /// A path inside the repository.
    File,
    /// A quantization name such as `Q4_K_M`.
    Quant,
}

impl From<&CatalogId> for CatalogIdParts {
    fn from(id: &CatalogId) -> Self {
        match id {
            CatalogId::HuggingFace {
                repo,
                revision,
                selector,
            } => CatalogIdParts::Hf {
                repo: repo.clone(),
                revision: revision.clone(),
                selector: selector.clone(),
                selector_kind: id.selector().map(|s| match s {
                    Selector::File(_) => SelectorKind::File,
                    Selector::Quant(_) => SelectorKind::Quant,
                }),
            },
            CatalogId::CivitAi { model, version } => CatalogIdParts::Civitai {
                model: *model,
                version: *version,
            },
            CatalogId::File { path } => CatalogIdParts::File { path: path.clone() },
        }
    }
}

/// Parses a catalog id into its parts, with the contract's error when it is malformed.
pub fn parse_id(text: &str) -> Result<CatalogIdParts, WasmError> {
    let id: CatalogId = text.parse()?;
    Ok(CatalogIdParts::from(&id))
}

/// Formats parts as a catalog id, validating them with the contract's parser so that only ids that
/// parse back are ever produced.
pub fn format_id(parts: &CatalogIdParts) -> Result<String, WasmError> {
    let id = match parts {
        CatalogIdParts::Hf {
            repo,
            revision,
            selector,
            ..
        } => CatalogId::HuggingFace {
            repo: repo.clone(),
            revision: revision.clone(),
            selector: selector.clone(),
        },
        CatalogIdParts::Civitai { model, version } => CatalogId::CivitAi {
            model: *model,
            version: *version,
        },
        CatalogIdParts::File { path } => CatalogId::File { path: path.clone() },
    };
    let text = id.to_string();
    let back: CatalogId = text.parse()?;
    debug_assert_eq!(back, id);
    Ok(text)
}

/// `parseCatalogId("hf:org/name@rev:Q4_K_M")`: the parts of an id, or an error naming the bad part.
#[wasm_bindgen(js_name = parseCatalogId)]
pub fn parse_catalog_id(id: &str) -> Result<Ts<CatalogIdParts>, JsError> {
    Ok(to_js(&parse_id(id)?)?)
}

/// `formatCatalogId(parts)`: the id string of parts, refused when it would not parse back.
#[wasm_bindgen(js_name = formatCatalogId)]
pub fn format_catalog_id(parts: Ts<CatalogIdParts>) -> Result<String, JsError> {
    let parts = from_js(&parts, "CatalogIdParts")?;
    Ok(format_id(&parts)?)
}

/// `normalizeCatalogId(text)`: the canonical string of an id (parse then format), to compare ids typed by people.
#[wasm_bindgen(js_name = normalizeCatalogId)]
pub fn normalize_catalog_id(id: &str) -> Result<String, JsError> {
    Ok(format_id(&parse_id(id.trim())?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip_through_the_contract() {
        for text in [
            "hf:meta-llama/Llama-3.2-3B@main:Q4_K_M",
            "hf:org/x:sub/model.gguf",
            "civitai:4201@130072",
            "civitai:1231067",
            "file:./models/x y.gguf",
        ] {
            let parts = parse_id(text).unwrap();
            assert_eq!(format_id(&parts).unwrap(), text);
        }
        assert_eq!(
            parse_id("hf:org/x@v1:Q4_K_M").unwrap(),
            CatalogIdParts::Hf {
                repo: "org/x".into(),
                revision: Some("v1".into()),
                selector: Some("Q4_K_M".into()),
                selector_kind: Some(SelectorKind::Quant),
            }
        );
    }

    #[test]
    fn bad_ids_and_bad_parts_name_the_problem() {
        let err = parse_id("ollama:llama3").unwrap_err().to_string();
        assert!(err.contains("unknown catalog id scheme"), "{err}");
        let bad = CatalogIdParts::Hf {
            repo: "no-slash".into(),
            revision: None,
            selector: None,
            selector_kind: None,
        };
        let err = format_id(&bad).unwrap_err().to_string();
        assert!(err.contains("invalid HuggingFace repo"), "{err}");
        let bad = CatalogIdParts::Hf {
            repo: "a/b".into(),
            revision: None,
            selector: Some("../../etc/passwd".into()),
            selector_kind: None,
        };
        assert!(format_id(&bad).is_err());
    }
}
