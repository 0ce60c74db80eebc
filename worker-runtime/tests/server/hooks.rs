//! The orchestrator hooks: a ready callback that is retried, heartbeats, neither ever fatal.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use worker_runtime::ServeArgs;

use crate::common::{MODEL, TestServer};

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Value>>>);

/// Fails the first POST with a 500 to prove the retry, then accepts.
async fn receive(State(received): State<Received>, Json(body): Json<Value>) -> StatusCode {
    let mut bodies = received.0.lock().unwrap();
    bodies.push(body);
    if bodies.len() == 1 {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

#[tokio::test]
async fn ready_callback_is_retried_and_heartbeats_follow() {
    let received = Received::default();
    let orchestrator = Router::new()
        .route("/hook", post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, orchestrator).await });

    let args = ServeArgs {
        callback_url: Some(hook.clone()),
        heartbeat_url: Some(hook),
        heartbeat_secs: 1,
        worker_id: Some("w-1".to_owned()),
        ..ServeArgs::default()
    };
    let server = TestServer::start(args, Duration::ZERO).await;
    server.wait_ready().await;
    let mut seen = Vec::new();
    for _ in 0..60 {
        seen = received.0.lock().unwrap().clone();
        let callbacks = seen.iter().filter(|body| body["event"] == "ready").count();
        let heartbeats = seen.iter().filter(|body| body["event"] == "heartbeat").count();
        if callbacks >= 2 && heartbeats >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let callbacks: Vec<&Value> = seen.iter().filter(|body| body["event"] == "ready").collect();
    assert!(
        callbacks.len() >= 2,
        "the callback is retried after a 500: {seen:?}"
    );
    let callback = callbacks[1];
    assert_eq!(callback["worker_id"], "w-1");
    assert_eq!(callback["model_id"], MODEL);
    assert_eq!(callback["device"], "cpu");
    assert_eq!(callback["port"], server.port);
    let heartbeat = seen
        .iter()
        .find(|body| body["event"] == "heartbeat")
        .expect("a heartbeat");
    assert_eq!(heartbeat["ready"], true);
    assert_eq!(heartbeat["queue_depth"], 0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unreachable_hooks_do_not_stop_the_worker() {
    // A port nobody listens on: bind one, note it, close it.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let args = ServeArgs {
        callback_url: Some(format!("http://{closed}/ready")),
        heartbeat_url: Some(format!("http://{closed}/beat")),
        heartbeat_secs: 1,
        ..ServeArgs::default()
    };
    let server = TestServer::start(args, Duration::ZERO).await;
    server.wait_ready().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let response = reqwest::get(server.url("/ready")).await.unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await.unwrap();
}
