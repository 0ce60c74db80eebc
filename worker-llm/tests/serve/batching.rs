//! The batching engine behind the server, with the real SmolLM2: requests running together each get
//! the greedy answer they get alone, `n > 1` answers several choices, and `/metrics` carries the gauges
//! a cluster's scheduler reads (running, waiting, KV-cache use, prefix-cache hits), back to rest after.

use std::time::Duration;

use serde_json::{Value, json};
use worker_llm::Prompt;
use worker_runtime::ServeArgs;

use crate::common::{Model, TestServer};

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_share_steps_and_the_gauges_follow() {
    let server = TestServer::start(
        Model::SmolLm2,
        ServeArgs {
            concurrency: 4,
            ..ServeArgs::default()
        },
    )
    .await;
    let prompts = [
        "The capital of France is",
        "Once upon a time",
        "The best way to learn",
        "Rust is",
    ];
    let requests = prompts.map(|prompt| {
        let url = server.url("/v1/completions");
        tokio::spawn(async move {
            let body = json!({"prompt": prompt, "max_tokens": 24, "temperature": 0, "ignore_eos": true});
            let response = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        })
    });
    // While they run: several sequences in the batch, cache blocks held.
    let mut seen_running = 0.0f64;
    let mut seen_usage = 0.0f64;
    for _ in 0..200 {
        seen_running = seen_running.max(server.metric("worker_requests_running", &[]).await.unwrap());
        seen_usage = seen_usage.max(server.metric("worker_kv_cache_usage_ratio", &[]).await.unwrap());
        if seen_running >= 2.0 && seen_usage > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen_running >= 2.0, "requests ran together: {seen_running}");
    assert!(seen_usage > 0.0);
    let answers = futures_util::future::join_all(requests).await;
    for (prompt, answer) in prompts.iter().zip(answers) {
        let answer = answer.unwrap();
        let (expected, _) = Model::SmolLm2.greedy(&Prompt::Text(prompt.to_string()), 24);
        // The in-process engine stops at end-of-sequence; the server ignored it, so compare the start.
        let text = answer["choices"][0]["text"].as_str().unwrap();
        assert!(
            text.starts_with(&expected),
            "{prompt:?}: {text:?} vs alone {expected:?}"
        );
    }
    assert_eq!(server.metric("worker_requests_running", &[]).await, Some(0.0));
    assert_eq!(server.metric("worker_requests_waiting", &[]).await, Some(0.0));
    assert_eq!(server.metric("worker_kv_cache_usage_ratio", &[]).await, Some(0.0));
    assert!(
        server
            .metric("worker_prefix_cache_queries_total", &[])
            .await
            .unwrap()
            > 0.0
    );
    assert!(
        server
            .metric("worker_prefix_cache_hits_total", &[])
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn n_choices_share_the_prompt_and_stream_with_their_index() {
    let server = TestServer::start(
        Model::SmolLm2,
        ServeArgs {
            concurrency: 2,
            ..ServeArgs::default()
        },
    )
    .await;
    let body = json!({
        "messages": [{"role": "user", "content": "Tell me a story about a dragon and a small village."}],
        "max_tokens": 6, "temperature": 0, "ignore_eos": true, "n": 3,
    });
    let (status, answer) = server.post("/v1/chat/completions", body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], i);
        assert_eq!(choice["finish_reason"], "length");
        assert_eq!(
            choice["message"]["content"], choices[0]["message"]["content"],
            "greedy: all alike"
        );
    }
    assert_eq!(answer["usage"]["completion_tokens"], 18);
    let hits = server
        .metric("worker_prefix_cache_hits_total", &[])
        .await
        .unwrap();
    assert!(
        hits >= 32.0,
        "the second and third choices found the prompt's full blocks: {hits}"
    );
}
