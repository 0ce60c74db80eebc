//! The fake Hub and the `catalog serve` setup that tests/serve.rs drives, and its SSE reader.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use artifacts_contract::ModelEntry;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use catalog::ops::{Settings, Sources};
use catalog::serve::{AppState, router};
use serde_json::Value;

use super::common;

pub const REV: &str = "0123456789abcdef0123456789abcdef01234567";
pub const ID: &str = "hf:demo/tiny-GGUF";
pub const FILE: &str = "/demo/tiny-GGUF/resolve/0123456789abcdef0123456789abcdef01234567/tiny-Q4_K_M.gguf";

/// A fake Hub serving one GGUF repo, slowly enough to watch (64 KiB every `delay_ms`), honouring
/// `Range: bytes=N-` and `bytes=N-M`, and recording the Range header of each file request.
#[derive(Clone)]
pub struct Hub {
    pub weights: Arc<Vec<u8>>,
    pub delay_ms: Arc<AtomicU64>,
    pub file_ranges: Arc<Mutex<Vec<Option<String>>>>,
}

impl Hub {
    /// Requests that fetch the file's body (not the header reads of `add`, which are closed ranges).
    pub fn downloads(&self) -> Vec<Option<String>> {
        self.file_ranges
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.as_deref().is_none_or(|r| r.ends_with('-')))
            .cloned()
            .collect()
    }
}

pub async fn hub_route(State(hub): State<Hub>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if path == "/api/models/demo/tiny-GGUF" {
        let n = hub.weights.len();
        let info = serde_json::json!({
            "id": "demo/tiny-GGUF", "author": "demo", "sha": REV, "gated": false,
            "pipeline_tag": "text-generation", "library_name": "gguf", "tags": ["gguf", "llama", "license:mit"],
            "siblings": [{"rfilename": "tiny-Q4_K_M.gguf", "size": n,
                          "lfs": {"sha256": common::sha256(&hub.weights), "size": n}}]
        });
        return ([(header::CONTENT_TYPE, "application/json")], info.to_string()).into_response();
    }
    if path != FILE {
        return (StatusCode::NOT_FOUND, "{\"error\":\"Repository not found\"}").into_response();
    }
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    hub.file_ranges.lock().unwrap().push(range.clone());
    let len = hub.weights.len();
    let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (a, b) = r.split_once('-').unwrap();
            let a: usize = a.parse().unwrap();
            let b = if b.is_empty() {
                len - 1
            } else {
                b.parse::<usize>().unwrap().min(len - 1)
            };
            (a, b + 1)
        }
        None => (0, len),
    };
    let status = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let delay = Duration::from_millis(hub.delay_ms.load(Ordering::SeqCst));
    let weights = hub.weights.clone();
    let chunks = futures_util::stream::unfold(start, move |pos| {
        let weights = weights.clone();
        async move {
            if pos >= end {
                return None;
            }
            tokio::time::sleep(delay).await;
            let next = (pos + (64 << 10)).min(end);
            Some((Ok::<_, std::io::Error>(weights[pos..next].to_vec()), next))
        }
    });
    let mut resp = Body::from_stream(chunks).into_response();
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, (end - start).into());
    if range.is_some() {
        let value = format!("bytes {start}-{}/{len}", end - 1);
        resp.headers_mut()
            .insert(header::CONTENT_RANGE, value.parse().unwrap());
    }
    resp
}

pub struct Setup {
    pub url: String,
    pub hub: Hub,
    pub client: reqwest::Client,
    pub _home: tempfile::TempDir,
    pub _hf_home: tempfile::TempDir,
}

pub async fn listen(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A fake Hub with `mib` MiB of weights, and `catalog serve` on a fresh home pointing at it.
pub async fn setup(mib: usize, token: Option<&str>) -> Setup {
    let mut weights = common::tiny_llama_gguf_declaring(1);
    weights.resize(mib << 20, 0);
    let hub = Hub {
        weights: Arc::new(weights),
        delay_ms: Arc::new(AtomicU64::new(0)),
        file_ranges: Arc::default(),
    };
    let hub_url = listen(axum::Router::new().fallback(hub_route).with_state(hub.clone())).await;
    let home = tempfile::tempdir().unwrap();
    let hf_home = tempfile::tempdir().unwrap();
    let sources = Sources::new(
        &Settings::default()
            .with("HF_ENDPOINT", hub_url.clone())
            .with("CIVITAI_ENDPOINT", hub_url)
            .with("HF_HOME", hf_home.path().to_string_lossy()),
    );
    let ui = tempfile::tempdir().unwrap();
    std::fs::write(ui.path().join("index.html"), "<!doctype html><title>ui</title>").unwrap();
    let state = AppState::new(home.path(), sources, token.map(str::to_string), ui.keep());
    Setup {
        url: listen(router(state)).await,
        hub,
        client: reqwest::Client::new(),
        _home: home,
        _hf_home: hf_home,
    }
}

impl Setup {
    pub fn api(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn json(&self, method: reqwest::Method, path: &str) -> (StatusCode, Value) {
        let resp = self.client.request(method, self.api(path)).send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn add(&self) -> ModelEntry {
        let resp = self
            .client
            .post(self.api("/api/entries"))
            .json(&serde_json::json!({ "source": ID }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    }

    pub async fn entry(&self) -> ModelEntry {
        let (status, body) = self
            .json(reqwest::Method::GET, &format!("/api/entry?id={ID}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_value(body).unwrap()
    }

    pub async fn pull(&self) -> reqwest::Response {
        let resp = self
            .client
            .post(self.api(&format!("/api/pull?id={ID}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp
    }
}

/// Reads SSE events (name, data) until `stop` says so or the stream ends.
pub async fn events(
    resp: &mut reqwest::Response,
    stop: impl Fn(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut buf = String::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if name.is_empty() {
                continue; // keep-alive comment
            }
            let value: Value = serde_json::from_str(&data).unwrap();
            let done = stop(&name, &value);
            out.push((name, value));
            if done {
                return out;
            }
        }
    }
    out
}

pub fn is_final(name: &str) -> bool {
    matches!(name, "done" | "error" | "cancelled")
}
