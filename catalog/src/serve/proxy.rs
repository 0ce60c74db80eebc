//! Forwards the web UI's "Try it" requests to a running worker, streaming the answer back.
//!
//! The workers send no CORS headers, so a page served here cannot call them itself. The UI names the
//! worker's base URL (from its Settings) in `X-Worker-Url`; only `/health`, `/ready` and `/v1/...` are
//! forwarded. A worker that is not running is a 502 that says so and how to start it.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::{ApiError, AppState};

/// The largest request body forwarded (an init image for img2img fits).
const MAX_BODY: usize = 32 << 20;

/// `GET|POST /api/worker/{kind}/{*path}` with `X-Worker-Url: http://HOST:PORT`.
pub async fn forward(
    State(state): State<AppState>,
    Path((kind, path)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let binary = match kind.as_str() {
        "llm" => "worker-llm",
        "sd" => "worker-sd",
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown worker {other:?}: expected llm or sd"
            )));
        }
    };
    if !(path == "health" || path == "ready" || path.starts_with("v1/")) || path.contains("..") {
        return Err(ApiError::bad_request(format!(
            "only /health, /ready and /v1/... are forwarded to workers, not /{path}"
        )));
    }
    let base = req
        .headers()
        .get("x-worker-url")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim_end_matches('/').to_string())
        .filter(|s| s.starts_with("http://") || s.starts_with("https://"))
        .ok_or_else(|| {
            ApiError::bad_request("set the worker's URL in Settings (X-Worker-Url: http://HOST:PORT)")
        })?;
    let url = format!("{base}/{path}");
    let method = req.method().clone();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body: {e}")))?;
    let mut out = state.inner.http.request(method, &url).body(body);
    for name in [header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = headers.get(&name) {
            out = out.header(name, v);
        }
    }
    // The worker's own API key, if it has one, travels in its own header (ours is the catalog's token).
    if let Some(key) = headers.get("x-worker-key").and_then(|v| v.to_str().ok()) {
        out = out.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let resp = out.send().await.map_err(|e| {
        let why = if e.is_connect() {
            "nothing answers there".to_string()
        } else {
            e.to_string()
        };
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "{binary} is not running at {base} ({why}); start it with `{binary} serve --model ID --port PORT` and check the URL in Settings"
            ),
        )
    })?;
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let stream = futures_util::stream::unfold(resp, |mut resp| async move {
        match resp.chunk().await {
            Ok(Some(bytes)) => Some((Ok::<_, std::io::Error>(bytes), resp)),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e)), resp)),
        }
    })
    .boxed();
    let mut response = Body::from_stream(stream).into_response();
    *response.status_mut() = status;
    if let Some(ct) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
