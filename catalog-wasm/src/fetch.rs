//! Fetch-and-parse for JavaScript: the catalog's ingestion code says what to fetch and reads what came
//! back; this room only performs the requests, with the caller's endpoint and token, through `fetch`.

use artifacts_contract::{CatalogId, ModelEntry};
use catalog::ingest::fetch::{GgufRead, HfFetch, run};
use catalog::ingest::{IngestError, civitai, hf};
use chrono::{DateTime, Utc};
use tsify::Ts;
use wasm_bindgen::prelude::*;

use crate::error::{WasmError, from_js, to_js};
use crate::http::{SourceOptions, get_text, perform};
use crate::ingest::{GgufMetadata, civitai_model_entries, entries_to_js, entry_to_js, now};

/// The catalog's parser of one source's search answer.
type SearchParser = fn(&[u8], DateTime<Utc>) -> Result<Vec<ModelEntry>, IngestError>;

/// Results per search when the caller does not say.
const DEFAULT_LIMIT: u32 = 20;

fn options(options: Ts<SourceOptions>) -> Result<SourceOptions, WasmError> {
    let options = from_js(&options, "SourceOptions")?;
    options.url("")?;
    Ok(options)
}

/// A catalog id of one scheme (`"hf"`, `"civitai"`), from the whole id or its bare part (`org/name`, `4201`).
pub fn id_of(text: &str, scheme: &'static str) -> Result<CatalogId, WasmError> {
    let text = text.trim();
    let id: CatalogId = if text.contains(':') {
        text.parse()?
    } else {
        format!("{scheme}:{text}").parse()?
    };
    if id.scheme() == scheme {
        return Ok(id);
    }
    Err(IngestError::WrongScheme {
        id: id.to_string(),
        expected: if scheme == "hf" { "hf:" } else { "civitai:" },
    }
    .into())
}

/// A search: the URL the catalog builds for the text, fetched, and its answer parsed by the catalog.
async fn search(
    text: &str,
    source: Ts<SourceOptions>,
    url_of: fn(&str, &str, u32) -> String,
    parse: SearchParser,
) -> Result<Vec<Ts<ModelEntry>>, WasmError> {
    let opts = options(source)?;
    let url = url_of(&opts.url("")?, text, opts.limit.unwrap_or(DEFAULT_LIMIT));
    let body = get_text(&url, opts.token.as_deref()).await?;
    entries_to_js(parse(body.as_bytes(), now())?)
}

async fn hf_entry(id: &CatalogId, opts: &SourceOptions) -> Result<ModelEntry, WasmError> {
    let token = opts.token.as_deref();
    let fetch = HfFetch::new(&opts.url("")?, id, now())?;
    run(fetch, |request| perform(request, token)).await
}

/// `fetchHfModel(id, { endpoint, token })`: model info, the metadata files and GGUF header the catalog
/// asks for, and the entry they describe. `id` is `hf:ORG/NAME[@REV][:FILE_OR_QUANT]` or `ORG/NAME`.
#[wasm_bindgen(js_name = fetchHfModel)]
pub async fn fetch_hf_model(id: String, source: Ts<SourceOptions>) -> Result<Ts<ModelEntry>, JsError> {
    let opts = options(source)?;
    let entry = hf_entry(&id_of(&id, "hf")?, &opts).await?;
    Ok(entry_to_js(&entry)?)
}

/// `searchHf(text, { endpoint, token, limit })`: the entries of a Hub search.
#[wasm_bindgen(js_name = searchHf)]
pub async fn search_hf(text: String, source: Ts<SourceOptions>) -> Result<Vec<Ts<ModelEntry>>, JsError> {
    Ok(search(&text, source, hf::search_url, hf::parse_search).await?)
}

/// `fetchCivitaiModel(id, { endpoint, token })`: every version of a CivitAI model as an entry.
/// `id` is `civitai:MODEL_ID[@VERSION]` or the model id; a version narrows the answer to it.
#[wasm_bindgen(js_name = fetchCivitaiModel)]
pub async fn fetch_civitai_model(
    id: String,
    source: Ts<SourceOptions>,
) -> Result<Vec<Ts<ModelEntry>>, JsError> {
    let opts = options(source)?;
    let id = id_of(&id, "civitai")?;
    let CatalogId::CivitAi { model, version } = id else {
        return Err(WasmError::from(IngestError::WrongScheme {
            id: id.to_string(),
            expected: "civitai:",
        })
        .into());
    };
    let body = get_text(&civitai::model_url(&opts.url("")?, model), opts.token.as_deref()).await?;
    let mut entries = civitai_model_entries(body.as_bytes(), now()).map_err(WasmError::from)?;
    if version.is_some() {
        entries.retain(|e| e.id == id);
        if entries.is_empty() {
            return Err(WasmError::from(IngestError::NoMatch {
                repo: format!("civitai:{model}"),
                wanted: version.map(|v| v.to_string()).unwrap_or_default(),
                choices: Vec::new(),
            })
            .into());
        }
    }
    Ok(entries_to_js(entries)?)
}

/// `fetchCivitaiModelVersion(versionId, { endpoint, token })`: the entry of one CivitAI version.
#[wasm_bindgen(js_name = fetchCivitaiModelVersion)]
pub async fn fetch_civitai_model_version(
    version: f64,
    source: Ts<SourceOptions>,
) -> Result<Ts<ModelEntry>, JsError> {
    let opts = options(source)?;
    // A JavaScript number: refuse fractions, negatives and values past 2^53 rather than rounding them.
    if !(version.fract() == 0.0 && (0.0..=9_007_199_254_740_991.0).contains(&version)) {
        return Err(WasmError::Shape {
            what: "CivitAI version id",
            message: format!("{version} is not a whole number from 0 to 2^53"),
        }
        .into());
    }
    let url = civitai::version_url(&opts.url("")?, version as u64);
    let body = get_text(&url, opts.token.as_deref()).await?;
    let entry = civitai::entry_from_version_json(body.as_bytes(), true, now()).map_err(WasmError::from)?;
    Ok(entry_to_js(&entry)?)
}

/// `searchCivitai(text, { endpoint, token, limit })`: the entries of a CivitAI models search.
#[wasm_bindgen(js_name = searchCivitai)]
pub async fn search_civitai(text: String, source: Ts<SourceOptions>) -> Result<Vec<Ts<ModelEntry>>, JsError> {
    Ok(search(&text, source, civitai::search_url, civitai::parse_models_list).await?)
}

/// `fetchGgufMetadata(url, token?)`: the header of a GGUF file read with HTTP Range requests, no
/// more bytes than the catalog's parser asks for.
#[wasm_bindgen(js_name = fetchGgufMetadata)]
pub async fn fetch_gguf_metadata(url: String, token: Option<String>) -> Result<Ts<GgufMetadata>, JsError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(WasmError::Endpoint(url).into());
    }
    let token = token.as_deref();
    let header = run(GgufRead::new(url), |request| perform(request, token)).await?;
    Ok(to_js(&GgufMetadata::from(&header))?)
}
