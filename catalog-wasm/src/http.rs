//! GET requests through the host's global `fetch` (browsers and Node 18+), so the module opens no
//! connection of its own and the caller decides the endpoint, the token and any proxy.

use js_sys::{Promise, Uint8Array};
use serde::Deserialize;
use tsify::Tsify;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, Request, RequestInit, Response};

use catalog::ingest::fetch::Request as FetchRequest;

use crate::error::WasmError;

/// Where one source lives and how to authenticate: passed in on every call, never built in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Tsify)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceOptions {
    /// Base URL of the API, e.g. `https://huggingface.co` or a loopback test server.
    pub endpoint: String,
    /// Bearer token sent as `Authorization`; omitted when absent.
    #[serde(default)]
    #[tsify(optional)]
    pub token: Option<String>,
    /// Most results a search returns.
    #[serde(default)]
    #[tsify(optional)]
    pub limit: Option<u32>,
}

impl SourceOptions {
    /// The endpoint joined with a path, refusing anything that is not an http(s) URL.
    pub fn url(&self, path: &str) -> Result<String, WasmError> {
        let base = self.endpoint.trim().trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(WasmError::Endpoint(self.endpoint.clone()));
        }
        Ok(format!("{base}{path}"))
    }
}

#[wasm_bindgen]
extern "C" {
    /// The global `fetch`, whichever host provides it.
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(request: &Request) -> Promise;
}

fn js_message(value: JsValue) -> String {
    value
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| value.as_string())
        .unwrap_or_else(|| format!("{value:?}"))
}

async fn send(url: &str, token: Option<&str>, range: Option<(u64, u64)>) -> Result<Response, WasmError> {
    let failed = |e: JsValue| WasmError::Network {
        url: url.to_string(),
        message: js_message(e),
    };
    let headers = Headers::new().map_err(failed)?;
    headers.set("Accept", "application/json").map_err(failed)?;
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        headers
            .set("Authorization", &format!("Bearer {token}"))
            .map_err(failed)?;
    }
    if let Some((start, end)) = range {
        headers
            .set("Range", &format!("bytes={start}-{end}"))
            .map_err(failed)?;
    }
    let init = RequestInit::new();
    init.set_method("GET");
    init.set_headers(&headers);
    let request = Request::new_with_str_and_init(url, &init).map_err(failed)?;
    let response: Response = JsFuture::from(global_fetch(&request))
        .await
        .map_err(failed)?
        .dyn_into()
        .map_err(failed)?;
    if !response.ok() {
        let body = match response.text() {
            Ok(p) => JsFuture::from(p).await.ok().and_then(|v| v.as_string()),
            Err(_) => None,
        };
        return Err(WasmError::Status {
            url: url.to_string(),
            status: response.status(),
            body: body.unwrap_or_default().chars().take(200).collect(),
        });
    }
    Ok(response)
}

/// The body of a successful GET as text.
pub async fn get_text(url: &str, token: Option<&str>) -> Result<String, WasmError> {
    let response = send(url, token, None).await?;
    let failed = |e: JsValue| WasmError::Network {
        url: url.to_string(),
        message: js_message(e),
    };
    let text = JsFuture::from(response.text().map_err(failed)?)
        .await
        .map_err(failed)?;
    text.as_string().ok_or_else(|| WasmError::Network {
        url: url.to_string(),
        message: "the body is not text".into(),
    })
}

/// Performs one request a catalog fetch machine asks for (`catalog::ingest::fetch`): a Range read is
/// cut at its end (servers that ignore ranges send the whole body), any other body over its limit is
/// refused.
pub async fn perform(request: FetchRequest, token: Option<&str>) -> Result<Vec<u8>, WasmError> {
    let url = request.url.as_str();
    let response = send(url, token, request.range).await?;
    let failed = |e: JsValue| WasmError::Network {
        url: url.to_string(),
        message: js_message(e),
    };
    let buffer = JsFuture::from(response.array_buffer().map_err(failed)?)
        .await
        .map_err(failed)?;
    let array = Uint8Array::new(&buffer);
    let len = u64::from(array.length());
    if request.range.is_none() && len > request.limit {
        return Err(WasmError::TooLarge {
            url: url.to_string(),
            limit: request.limit,
        });
    }
    Ok(array.subarray(0, len.min(request.limit) as u32).to_vec())
}
