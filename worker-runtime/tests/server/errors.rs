//! Bad requests get a 4xx with a clear message naming the problem, and the server goes on.

use std::time::Duration;

use serde_json::Value;
use worker_runtime::ServeArgs;

use crate::common::{SseReader, TestServer};

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("error bodies are JSON");
    (status, body["error"].clone())
}

async fn post_raw(server: &TestServer, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn assert_still_ready(server: &TestServer) {
    let response = reqwest::get(server.url("/ready")).await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "the server must still be ready after a bad request"
    );
}

#[tokio::test]
async fn malformed_json_is_a_400_saying_where() {
    let server = TestServer::start(ServeArgs::default(), Duration::ZERO).await;
    server.wait_ready().await;
    let (status, error) = error_of(post_raw(&server, "/v1/count", r#"{"steps": 3"#).await).await;
    assert_eq!(status, 400);
    assert_eq!(error["type"], "invalid_request_error");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("malformed JSON") && message.contains("column"),
        "{message}"
    );
    let (status, error) = error_of(post_raw(&server, "/v1/count", "").await).await;
    assert_eq!(status, 400);
    assert!(error["message"].as_str().unwrap().contains("empty"));
    assert_still_ready(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_wrong_type_or_out_of_range_value_names_the_field() {
    let server = TestServer::start(ServeArgs::default(), Duration::ZERO).await;
    server.wait_ready().await;
    let (status, error) = error_of(post_raw(&server, "/v1/count", r#"{"steps": "ten"}"#).await).await;
    assert_eq!(status, 400);
    assert_eq!(error["param"], "steps");
    assert!(
        error["message"].as_str().unwrap().contains("invalid type"),
        "{error}"
    );
    let (status, error) = error_of(post_raw(&server, "/v1/count", r#"{"steps": 0}"#).await).await;
    assert_eq!(status, 400);
    assert_eq!(error["param"], "steps");
    assert!(
        error["message"].as_str().unwrap().contains("between 1 and 10000"),
        "{error}"
    );
    // Unknown fields are ignored, not refused.
    let response = post_raw(&server, "/v1/count/whole", r#"{"steps": 2, "colour": "blue"}"#).await;
    assert_eq!(response.status(), 200);
    assert_still_ready(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_oversized_body_is_a_413() {
    let args = ServeArgs {
        max_body_bytes: 1024,
        ..ServeArgs::default()
    };
    let server = TestServer::start(args, Duration::ZERO).await;
    server.wait_ready().await;
    let body = format!(r#"{{"steps": 1, "pad": "{}"}}"#, "x".repeat(4096));
    let (status, error) = error_of(post_raw(&server, "/v1/count", body).await).await;
    assert_eq!(status, 413);
    assert_eq!(error["code"], "payload_too_large");
    assert!(error["message"].as_str().unwrap().contains("1024"), "{error}");
    assert_still_ready(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_404_and_405() {
    let server = TestServer::start(ServeArgs::default(), Duration::ZERO).await;
    server.wait_ready().await;
    let (status, error) = error_of(reqwest::get(server.url("/v1/nothing")).await.unwrap()).await;
    assert_eq!(status, 404);
    assert!(error["message"].as_str().unwrap().contains("/v1/nothing"));
    let (status, error) = error_of(reqwest::get(server.url("/v1/count")).await.unwrap()).await;
    assert_eq!(status, 405);
    assert!(error["message"].as_str().unwrap().contains("GET"));
    assert_still_ready(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_panicking_job_is_an_error_event_and_the_next_job_runs() {
    let server = TestServer::start(ServeArgs::default(), Duration::ZERO).await;
    server.wait_ready().await;
    let streamed = post_raw(&server, "/v1/count", r#"{"steps": 5, "panic_at": 2}"#).await;
    assert_eq!(streamed.status(), 200);
    let events = SseReader::new(streamed).rest().await;
    let names: Vec<&str> = events.iter().map(|event| event.event.as_str()).collect();
    assert_eq!(names, ["started", "output", "output", "error"]);
    assert_eq!(events[3].data["code"], "internal_error");
    assert!(
        events[3].data["message"]
            .as_str()
            .unwrap()
            .contains("the counter broke at 2")
    );

    let (status, error) =
        error_of(post_raw(&server, "/v1/count/whole", r#"{"steps": 5, "panic_at": 0}"#).await).await;
    assert_eq!(status, 500);
    assert_eq!(error["type"], "server_error");

    let response = post_raw(&server, "/v1/count/whole", r#"{"steps": 3}"#).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["values"], serde_json::json!([0, 1, 2]));
    assert_eq!(body["stop_reason"], "complete");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn ready_is_503_while_loading_then_200_with_the_model() {
    let server = TestServer::start(ServeArgs::default(), Duration::from_millis(400)).await;
    let response = reqwest::get(server.url("/ready")).await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "loading");
    // Jobs are refused while loading, with a retry hint.
    let response = post_raw(&server, "/v1/count", r#"{"steps": 1}"#).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let (_, error) = error_of(response).await;
    assert_eq!(error["code"], "model_loading");
    assert_eq!(reqwest::get(server.url("/health")).await.unwrap().status(), 200);

    server.wait_ready().await;
    let body: Value = reqwest::get(server.url("/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["model_id"], crate::common::MODEL);
    assert_eq!(body["device"], "cpu");
    assert_eq!(body["memory"]["weights_bytes"], 1234);
    assert!(body["load_seconds"].as_f64().unwrap() >= 0.4);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_model_that_fails_to_load_stops_the_server_with_the_error() {
    let failure = worker_runtime::WorkerError::Internal("weights are corrupt".to_owned());
    let server = TestServer::start_with(ServeArgs::default(), Duration::ZERO, Err(failure)).await;
    let err = server.join().await.unwrap_err();
    assert!(err.to_string().contains("weights are corrupt"), "{err}");
}
