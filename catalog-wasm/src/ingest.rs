//! Parsing what a source answered, for JavaScript: each export hands the text or bytes to the
//! catalog's ingestion code (`catalog::ingest`) and converts the result; no mapping lives here.

use std::collections::BTreeMap;

use artifacts_contract::{CatalogId, LlmConfig, ModelEntry};
use catalog::ingest::gguf::{self, GgufHeader, GgufValue};
use catalog::ingest::{IngestError, civitai, hf};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tsify::{Ts, Tsify};
use wasm_bindgen::prelude::*;

use crate::error::{WasmError, to_js};

/// The time stamped on new entries (`addedAt`, `updatedAt`): the host's clock.
pub fn now() -> DateTime<Utc> {
    #[cfg(target_arch = "wasm32")]
    let millis = js_sys::Date::now() as i64;
    #[cfg(not(target_arch = "wasm32"))]
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

/// What a GGUF header says, for people: the catalog's typed config plus the raw scalar metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Tsify)]
#[serde(rename_all = "camelCase")]
#[tsify(hashmap_as_object)]
pub struct GgufMetadata {
    /// Format version (2 or 3).
    pub version: u32,
    /// Tensors the file declares.
    pub tensor_count: u64,
    /// Bytes from the start of the file to the end of the metadata: what a Range request must cover.
    pub header_bytes: u64,
    /// `general.name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub name: Option<String>,
    /// The config the catalog derives from the header (family, context length, quantization...).
    pub config: LlmConfig,
    /// Every key; arrays (vocabularies, merges) are given as their length only.
    #[tsify(type = "Record<string, GgufScalar>")]
    pub metadata: BTreeMap<String, GgufScalar>,
}

/// One metadata value as JavaScript sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Tsify)]
#[serde(untagged)]
pub enum GgufScalar {
    /// A string value.
    Text(String),
    /// Any integer or float (integers past 2^53 lose precision, as JavaScript numbers do).
    Number(f64),
    /// A boolean.
    Flag(bool),
    /// An array, summarized.
    Array {
        /// Number of elements.
        #[serde(rename = "arrayLength")]
        array_length: usize,
    },
}

impl From<&GgufValue> for GgufScalar {
    fn from(value: &GgufValue) -> Self {
        match value {
            GgufValue::Uint(v) => GgufScalar::Number(*v as f64),
            GgufValue::Int(v) => GgufScalar::Number(*v as f64),
            GgufValue::Float(v) => GgufScalar::Number(*v),
            GgufValue::Bool(v) => GgufScalar::Flag(*v),
            GgufValue::String(v) => GgufScalar::Text(v.clone()),
            GgufValue::Array(v) => GgufScalar::Array {
                array_length: v.len(),
            },
        }
    }
}

impl From<&GgufHeader> for GgufMetadata {
    fn from(h: &GgufHeader) -> Self {
        GgufMetadata {
            version: h.version,
            tensor_count: h.tensor_count,
            header_bytes: h.metadata_end,
            name: h.name().map(str::to_string),
            config: h.llm_config(),
            metadata: h.metadata.iter().map(|(k, v)| (k.clone(), v.into())).collect(),
        }
    }
}

/// Every version of a CivitAI model as its own entry (`civitai:MODEL@VERSION`), newest first;
/// versions the catalog cannot describe are left out, and if none is left the newest one's error is given.
pub fn civitai_model_entries(bytes: &[u8], now: DateTime<Utc>) -> Result<Vec<ModelEntry>, IngestError> {
    let model = civitai::parse_model(bytes)?;
    let mut entries = Vec::new();
    let mut first_error = None;
    for version in &model.model_versions {
        let id = CatalogId::CivitAi {
            model: model.id,
            version: Some(version.id),
        };
        // Browsing downloads nothing, so pickle weights are described rather than refused.
        match civitai::entry_from_model(&id, &model, true, now) {
            Ok(entry) => entries.push(entry),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if entries.is_empty() => Err(e),
        _ if entries.is_empty() => Err(IngestError::NoWeights(format!(
            "civitai:{} (it has no versions)",
            model.id
        ))),
        _ => Ok(entries),
    }
}

/// Converts entries for JavaScript.
pub fn entries_to_js(entries: Vec<ModelEntry>) -> Result<Vec<Ts<ModelEntry>>, WasmError> {
    entries.iter().map(to_js).collect()
}

/// Converts one entry for JavaScript.
pub fn entry_to_js(entry: &ModelEntry) -> Result<Ts<ModelEntry>, WasmError> {
    to_js(entry)
}

/// `parseHfModelInfo(json)`: the entry a Hub model-info response describes (no file fetched).
#[wasm_bindgen(js_name = parseHfModelInfo)]
pub fn parse_hf_model_info(json: &str) -> Result<Ts<ModelEntry>, JsError> {
    let entry = hf::entry_from_model_info_json(json.as_bytes(), now()).map_err(WasmError::from)?;
    Ok(entry_to_js(&entry)?)
}

/// `parseHfSearch(json)`: the entries of a Hub search response (`/api/models?search=`).
#[wasm_bindgen(js_name = parseHfSearch)]
pub fn parse_hf_search(json: &str) -> Result<Vec<Ts<ModelEntry>>, JsError> {
    let entries = hf::parse_search(json.as_bytes(), now()).map_err(WasmError::from)?;
    Ok(entries_to_js(entries)?)
}

/// `parseCivitaiModel(json)`: one entry per version of a CivitAI model response, newest first.
#[wasm_bindgen(js_name = parseCivitaiModel)]
pub fn parse_civitai_model(json: &str) -> Result<Vec<Ts<ModelEntry>>, JsError> {
    let entries = civitai_model_entries(json.as_bytes(), now()).map_err(WasmError::from)?;
    Ok(entries_to_js(entries)?)
}

/// `parseCivitaiModelVersion(json)`: the entry of a CivitAI model-version (or by-hash) response.
#[wasm_bindgen(js_name = parseCivitaiModelVersion)]
pub fn parse_civitai_model_version(json: &str) -> Result<Ts<ModelEntry>, JsError> {
    let entry = civitai::entry_from_version_json(json.as_bytes(), true, now()).map_err(WasmError::from)?;
    Ok(entry_to_js(&entry)?)
}

/// `parseCivitaiModels(json)`: the entries of a CivitAI models-list (search) response, newest version each.
#[wasm_bindgen(js_name = parseCivitaiModels)]
pub fn parse_civitai_models(json: &str) -> Result<Vec<Ts<ModelEntry>>, JsError> {
    let entries = civitai::parse_models_list(json.as_bytes(), now()).map_err(WasmError::from)?;
    Ok(entries_to_js(entries)?)
}

/// `readGgufMetadata(bytes)`: the metadata of a GGUF header from the first bytes of the file; a
/// prefix too short is refused with the number of bytes needed.
#[wasm_bindgen(js_name = readGgufMetadata)]
pub fn read_gguf_metadata(bytes: &[u8]) -> Result<Ts<GgufMetadata>, JsError> {
    let header = gguf::parse_header(bytes).map_err(|e| WasmError::from(IngestError::from(e)))?;
    Ok(to_js(&GgufMetadata::from(&header))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL_4201: &str = include_str!("../../ts/test/fixtures/civitai-model-4201.json");

    #[test]
    fn every_civitai_version_becomes_an_entry_keyed_by_its_version() {
        let raw: serde_json::Value = serde_json::from_str(MODEL_4201).unwrap();
        let versions: Vec<u64> = raw["modelVersions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["id"].as_u64().unwrap())
            .collect();
        let entries = civitai_model_entries(MODEL_4201.as_bytes(), now()).unwrap();
        let ids: Vec<String> = entries.iter().map(|e| e.id.to_string()).collect();
        let expected: Vec<String> = versions.iter().map(|v| format!("civitai:4201@{v}")).collect();
        assert_eq!(ids, expected);
    }

    #[test]
    fn gguf_metadata_summarizes_arrays_and_keeps_scalars() {
        let bytes = gguf::write_header(
            &[
                ("general.architecture", GgufValue::String("qwen2".into())),
                ("qwen2.context_length", GgufValue::Uint(32768)),
                (
                    "tokenizer.ggml.tokens",
                    GgufValue::Array(vec![GgufValue::String("a".into()); 3]),
                ),
            ],
            0,
        );
        let meta = GgufMetadata::from(&gguf::parse_header(&bytes).unwrap());
        assert_eq!(meta.config.context_length, Some(32768));
        assert_eq!(
            meta.metadata["tokenizer.ggml.tokens"],
            GgufScalar::Array { array_length: 3 }
        );
        assert_eq!(meta.header_bytes, bytes.len() as u64);
    }
}
