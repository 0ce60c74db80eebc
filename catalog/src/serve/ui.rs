//! The built web UI: files of the UI folder, `index.html` for `/`, nothing outside the folder.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// Serves a UI file; a path that is not a file of the folder is a 404.
pub async fn serve(State(state): State<AppState>, req: Request) -> Response {
    let rel = req.uri().path().trim_start_matches('/');
    let rel = if rel.is_empty() { "index.html" } else { rel };
    if rel
        .split('/')
        .any(|part| part == ".." || part.is_empty() || part.starts_with('.'))
        || rel.contains('\\')
    {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    let dir = state.inner.ui_dir.clone();
    let path = dir.join(rel);
    let read = tokio::task::spawn_blocking(move || std::fs::read(path)).await;
    match read.unwrap_or_else(|e| Err(std::io::Error::other(e))) {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type(rel))], bytes).into_response(),
        Err(_) if rel == "index.html" => Html(format!(
            "<!doctype html><title>Open Model Catalog</title><p>The web UI is not built at {}. Build it with \
             <code>cd ts &amp;&amp; npm install &amp;&amp; npm run build:web</code>, or pass <code>--ui-dir</code>. \
             The API is at <a href=\"/api/openapi.json\">/api/openapi.json</a>.</p>",
            html_escape(&dir.display().to_string())
        ))
        .into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
