//! `catalog serve` over loopback against a fake Hub: the API a browser uses, pulls streamed as SSE
//! (shared between tabs, surviving a closed tab, cancelled and resumed), the token, the worker proxy,
//! and the OpenAPI description checked against the routes.

#[path = "integration/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use artifacts_contract::ArtifactStatus;
use axum::http::{StatusCode, header};
use catalog::serve::{OPENAPI, ROUTES};
use serde_json::Value;

mod serve_support;

use serve_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_pull_with_progress_compat_verify_and_remove() {
    let s = setup(4, None).await;
    s.hub.delay_ms.store(2, Ordering::SeqCst);
    let added = s.add().await;
    assert_eq!(added.status, ArtifactStatus::NotDownloaded);
    let size = (4 << 20) as u64;
    assert_eq!(added.size, size);

    let mut resp = s.pull().await;
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let evs = events(&mut resp, |n, _| is_final(n)).await;
    let (last, done) = evs.last().unwrap();
    assert_eq!(last, "done", "{evs:?}");
    assert_eq!(done["entry"]["status"]["state"], "available");
    let progress: Vec<&Value> = evs
        .iter()
        .filter(|(n, _)| n == "progress")
        .map(|(_, v)| v)
        .collect();
    assert!(
        progress.len() >= 3,
        "a 4 MiB pull at 64 KiB per 2 ms reports along the way: {evs:?}"
    );
    for p in &progress {
        assert_eq!(p["totalBytes"], size);
        assert!(p["bytesPerSecond"].as_f64().unwrap() >= 0.0);
    }
    let bytes: Vec<u64> = progress
        .iter()
        .map(|p| p["downloadedBytes"].as_u64().unwrap())
        .collect();
    assert!(bytes.windows(2).all(|w| w[0] <= w[1]), "{bytes:?}");
    assert!(
        progress
            .iter()
            .any(|p| p["bytesPerSecond"].as_f64().unwrap() > 0.0)
    );
    let last_progress = progress.last().unwrap();
    assert_eq!(last_progress["downloadedBytes"], size);
    assert_eq!(last_progress["phase"], "verifying");

    // Listed, shown, compatible with worker-llm only, and verified.
    let (_, list) = s.json(reqwest::Method::GET, "/api/entries").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, list) = s.json(reqwest::Method::GET, "/api/entries?type=image").await;
    assert_eq!(list.as_array().unwrap().len(), 0);
    let (status, compat) = s
        .json(reqwest::Method::GET, &format!("/api/compat?id={ID}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(compat[0]["worker"], "llm");
    assert_eq!(compat[0]["compatible"], true);
    assert!(compat[0]["memoryBytes"].as_u64().unwrap() > 0);
    assert_eq!(compat[1]["compatible"], false);
    assert!(!compat[1]["reasons"].as_array().unwrap().is_empty());
    let (status, verified) = s
        .json(reqwest::Method::POST, &format!("/api/verify?id={ID}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(verified["status"]["state"], "available");

    // Pulling an available entry answers done at once, without downloading again.
    let evs = events(&mut s.pull().await, |n, _| is_final(n)).await;
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].0, "done");
    assert_eq!(s.hub.downloads().len(), 1);

    // Removing it says what was freed, and the file is gone.
    let path = s.entry().await.path.unwrap();
    let file = std::path::Path::new(&path).join("tiny-Q4_K_M.gguf");
    assert!(file.exists());
    let (status, removed) = s
        .json(reqwest::Method::DELETE, &format!("/api/entry?id={ID}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert_eq!(removed["freedBytes"], size);
    assert!(!file.exists());
    let (status, err) = s.json(reqwest::Method::GET, &format!("/api/entry?id={ID}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(err["error"].as_str().unwrap().contains("catalog add"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_tabs_share_one_download_and_a_closed_tab_does_not_stop_it() {
    let s = setup(4, None).await;
    s.hub.delay_ms.store(5, Ordering::SeqCst);
    s.add().await;
    let mut first = s.pull().await;
    let mut second = s.pull().await;
    // The first tab closes after one event; the second watches to the end.
    let early = events(&mut first, |_, _| true).await;
    assert_eq!(early[0].0, "progress");
    drop(first);
    let evs = events(&mut second, |n, _| is_final(n)).await;
    assert_eq!(evs.last().unwrap().0, "done", "{evs:?}");
    assert_eq!(s.hub.downloads(), vec![None], "one download, fetched once");
    assert!(s.entry().await.status.is_available());

    // A tab that opens the stream and closes it at once: the pull still finishes.
    let (_, removed) = s
        .json(reqwest::Method::DELETE, &format!("/api/entry?id={ID}"))
        .await;
    assert_eq!(removed["freedBytes"], 4 << 20);
    s.add().await;
    let mut tab = s.pull().await;
    events(&mut tab, |_, _| true).await;
    drop(tab);
    let mut waited = 0;
    while !s.entry().await.status.is_available() {
        assert!(waited < 200, "the pull stopped when its tab closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    assert_eq!(s.hub.downloads().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_pull_resumes_where_it_stopped() {
    let s = setup(8, None).await;
    s.hub.delay_ms.store(20, Ordering::SeqCst);
    s.add().await;
    let mut resp = s.pull().await;
    // Once a MiB arrived, another tab cancels; this stream ends with `cancelled`.
    events(&mut resp, |_, v| {
        v["downloadedBytes"].as_u64().unwrap_or(0) >= 1 << 20
    })
    .await;
    let (status, body) = s
        .json(reqwest::Method::DELETE, &format!("/api/pull?id={ID}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let evs = events(&mut resp, |n, _| is_final(n)).await;
    let (name, cancelled) = evs.last().unwrap();
    assert_eq!(name, "cancelled", "{evs:?}");
    let kept = cancelled["downloadedBytes"].as_u64().unwrap();
    assert!((1 << 20..8 << 20).contains(&kept), "{kept}");
    match s.entry().await.status {
        ArtifactStatus::Downloading { downloaded_bytes, .. } => assert_eq!(downloaded_bytes, kept),
        other => panic!("a cancelled pull should stay resumable, not {other:?}"),
    }
    let (status, _) = s
        .json(reqwest::Method::DELETE, &format!("/api/pull?id={ID}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing runs now");

    // The next pull asks only for the rest, and the entry verifies.
    s.hub.delay_ms.store(0, Ordering::SeqCst);
    let evs = events(&mut s.pull().await, |n, _| is_final(n)).await;
    assert_eq!(evs.last().unwrap().0, "done", "{evs:?}");
    let downloads = s.hub.downloads();
    assert_eq!(downloads.len(), 2, "{downloads:?}");
    let resumed_from: u64 = downloads[1]
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("the second download should be a Range request: {downloads:?}"));
    assert!(resumed_from >= kept, "{resumed_from} < {kept}");
    assert!(s.entry().await.status.is_available());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_token_guards_the_api_and_the_ui_is_served() {
    let s = setup(1, Some("sekrit")).await;
    let (status, body) = s.json(reqwest::Method::GET, "/api/entries").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
    let ok = s
        .client
        .get(s.api("/api/entries"))
        .bearer_auth("sekrit")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let wrong = s
        .client
        .get(s.api("/api/entries"))
        .bearer_auth("sekriT")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let page = s.client.get(s.api("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("<title>ui</title>"));
    let escape = s.client.get(s.api("/..%2f..%2fetc/passwd")).send().await.unwrap();
    assert_eq!(escape.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_that_is_not_running_is_a_clear_502() {
    let s = setup(1, None).await;
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let resp = s
        .client
        .post(s.api("/api/worker/llm/v1/chat/completions"))
        .header("x-worker-url", format!("http://127.0.0.1:{port}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let body: Value = resp.json().await.unwrap();
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("worker-llm is not running at http://127.0.0.1:"),
        "{msg}"
    );
    assert!(msg.contains("worker-llm serve"), "{msg}");
    let (status, body) = s.json(reqwest::Method::GET, "/api/worker/llm/etc/passwd").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_openapi_description_matches_the_routes() {
    let s = setup(1, None).await;
    let served: Value = s
        .client
        .get(s.api("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, serde_json::from_str::<Value>(OPENAPI).unwrap());
    let mut described = BTreeSet::new();
    for (path, item) in served["paths"].as_object().unwrap() {
        for method in ["get", "post", "delete", "put", "patch"] {
            if item.get(method).is_some() {
                described.insert((method.to_string(), path.clone()));
            }
        }
    }
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(described, routes, "openapi.json and ROUTES disagree");
    // Every listed route is routed: no "no route" 404 and no 405.
    for (method, path) in &routes {
        let path = path.replace("{kind}", "llm").replace("{path}", "health");
        let method: reqwest::Method = method.to_uppercase().parse().unwrap();
        let resp = s
            .client
            .request(method.clone(), s.api(&format!("{path}?id={ID}&q=x&model=1")))
            .header("x-worker-url", "http://127.0.0.1:9")
            .json(&serde_json::json!({ "source": "hf:demo/absent" }))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(!text.contains("no route"), "{method} {path}: {text}");
    }
    // And an unlisted one is a JSON 404 naming it.
    let (status, body) = s.json(reqwest::Method::GET, "/api/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no route GET /api/nothing-here");
}
