//! The queue with the real SmolLM2 (jobs that last): 16 clients at once each get a whole answer or a
//! 503, nothing hangs, the queue drains to 0; a client that leaves mid-stream frees the worker; and
//! `/tokenize` answers while a job holds the engine.

use std::time::Duration;

use serde_json::{Value, json};
use worker_runtime::ServeArgs;

use crate::common::{Model, TestServer, sse_events};

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_clients_each_get_a_whole_answer_or_a_503() {
    let server = TestServer::start(
        Model::SmolLm2,
        ServeArgs {
            max_waiting: 4,
            ..ServeArgs::default()
        },
    )
    .await;
    let url = server.url("/v1/chat/completions");
    let clients = (0..16).map(|i| {
        let url = url.clone();
        tokio::spawn(async move {
            let body = json!({
                "messages": [{"role": "user", "content": format!("Count to {i}.")}],
                "max_tokens": 8, "temperature": 0, "ignore_eos": true, "stream": i % 2 == 0,
            });
            let response = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").is_some();
            (status, retry_after, i % 2 == 0, response.text().await.unwrap())
        })
    });
    let answers = tokio::time::timeout(Duration::from_secs(120), futures_util::future::join_all(clients))
        .await
        .expect("no client hangs");
    let (mut served, mut refused) = (0, 0);
    for answer in answers {
        let (status, retry_after, streamed, text) = answer.unwrap();
        match status {
            200 if streamed => {
                let events = sse_events(&text);
                assert_eq!(
                    events.last().unwrap().1,
                    "[DONE]",
                    "a streamed answer is complete"
                );
                let last: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
                assert_eq!(last["choices"][0]["finish_reason"], "length", "{text}");
                served += 1;
            }
            200 => {
                let body: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(
                    body["choices"][0]["finish_reason"], "length",
                    "a whole answer is complete"
                );
                assert_eq!(body["usage"]["completion_tokens"], 8);
                served += 1;
            }
            503 => {
                assert!(text.contains("queue_full") && retry_after, "{text}");
                refused += 1;
            }
            other => panic!("unexpected status {other}: {text}"),
        }
    }
    assert!(
        served >= 5,
        "one running and four waiting are served at least: {served}"
    );
    assert!(refused >= 1, "16 at once overflow 1 running + 4 waiting");
    assert_eq!(served + refused, 16);
    assert_eq!(server.metric("worker_queue_depth", &[]).await, Some(0.0));
    assert_eq!(server.metric("worker_jobs_running", &[]).await, Some(0.0));
    assert_eq!(
        server.metric("worker_jobs_total", &[("outcome", "length")]).await,
        Some(served as f64)
    );
    assert_eq!(reqwest::get(server.url("/ready")).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_leaving_mid_stream_frees_the_worker() {
    let server = TestServer::start(Model::SmolLm2, ServeArgs::default()).await;
    let leaver = reqwest::Client::new();
    let body = json!({"prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": true, "stream": true});
    let mut response = leaver
        .post(server.url("/v1/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = String::new();
    while received.matches("data:").count() < 3 {
        received.push_str(std::str::from_utf8(&response.chunk().await.unwrap().unwrap()).unwrap());
    }
    // Tokenizing does not wait for the running job (it would for minutes: 4000 tokens).
    let tokenized = tokio::time::timeout(
        Duration::from_secs(10),
        server.post("/tokenize", r#"{"prompt": "Hi"}"#),
    )
    .await
    .expect("/tokenize answers while a job runs");
    assert_eq!(tokenized.0, 200);
    assert_eq!(
        server.metric("worker_jobs_running", &[]).await,
        Some(1.0),
        "the job was still running"
    );
    drop(response);
    drop(leaver);

    // The next request is served at once, and the abandoned job stopped long before its 4000 tokens.
    let request = json!({"prompt": "Hello", "max_tokens": 2, "temperature": 0});
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        server.post("/v1/completions", request.to_string()),
    )
    .await
    .expect("the worker is free for the next job");
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert!(answer.1["choices"][0]["text"].is_string());
    assert_eq!(
        server
            .metric("worker_jobs_total", &[("outcome", "cancelled")])
            .await,
        Some(1.0)
    );
    let outputs = server.metric("worker_outputs_total", &[]).await.unwrap();
    assert!(outputs < 400.0, "the cancelled job went on to {outputs} tokens");
    assert_eq!(server.metric("worker_jobs_running", &[]).await, Some(0.0));
}
