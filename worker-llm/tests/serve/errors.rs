//! Bad requests: 4xx with a message naming the problem (and the field, as OpenAI's `param`), and the
//! server still ready afterwards; a context overflow names the three numbers.

use serde_json::json;
use worker_runtime::ServeArgs;

use crate::common::{Model, TestServer};

const CHAT: &str = "/v1/chat/completions";

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_4xx_naming_the_problem_and_the_server_stays_ready() {
    let args = ServeArgs {
        max_body_bytes: 16 * 1024,
        ..ServeArgs::default()
    };
    let server = TestServer::start(Model::Tiny, args).await;
    let message = |body: &serde_json::Value| body["error"]["message"].as_str().unwrap_or_default().to_owned();

    let (status, body) = server
        .post(CHAT, r#"{"messages": [{"role": "user", "content": "hi"}"#)
        .await;
    assert_eq!(status, 400);
    assert!(message(&body).contains("malformed JSON"), "{body}");

    let (status, body) = server.post(CHAT, "").await;
    assert_eq!(status, 400);
    assert!(message(&body).contains("empty"), "{body}");

    // Wrong types, named by their path.
    let wrong_types = [
        (
            r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}"#,
            "max_tokens",
        ),
        (
            r#"{"messages": [{"role": 7, "content": "hi"}]}"#,
            "messages[0].role",
        ),
        (r#"{"messages": "hi"}"#, "messages"),
        (
            r#"{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}"#,
            "stream",
        ),
        (
            r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}"#,
            "max_tokens",
        ),
    ];
    for (request, param) in wrong_types {
        let (status, body) = server.post(CHAT, request).await;
        assert_eq!(status, 400, "{request}");
        assert_eq!(body["error"]["param"], param, "{request}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    }

    // Out-of-range values: the field and the value in the message.
    let out_of_range = [
        (json!({"temperature": 2.5}), "temperature", "2.5"),
        (json!({"top_p": 1.5}), "top_p", "1.5"),
        (json!({"top_p": 0}), "top_p", "0"),
        (json!({"min_p": -0.1}), "min_p", "-0.1"),
        (json!({"presence_penalty": 3}), "presence_penalty", "3"),
        (json!({"frequency_penalty": -2.5}), "frequency_penalty", "-2.5"),
        (json!({"repetition_penalty": 0}), "repetition_penalty", "0"),
        (json!({"top_k": -3}), "top_k", "-3"),
        (json!({"max_tokens": 0}), "max_tokens", "at least 1"),
        (
            json!({"max_completion_tokens": 0}),
            "max_completion_tokens",
            "at least 1",
        ),
        (json!({"n": 17}), "n", "17"),
        (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop", "4"),
        (json!({"stop": [""]}), "stop", "empty"),
    ];
    for (fields, param, shown) in out_of_range {
        let mut request = json!({"messages": [{"role": "user", "content": "hi"}]});
        request
            .as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        let (status, body) = server.post(CHAT, request.to_string()).await;
        assert_eq!(status, 400, "{request}");
        assert_eq!(body["error"]["param"], param, "{request}: {body}");
        assert!(message(&body).contains(shown), "{request}: {body}");
    }

    let bad_inputs = [
        (CHAT, r#"{"messages": []}"#, "messages"),
        (CHAT, r#"{"prompt": "w5"}"#, "messages"),
        (
            CHAT,
            r#"{"messages": [{"role": "tool", "content": "x"}]}"#,
            "messages[0].role",
        ),
        (
            CHAT,
            r#"{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#,
            "messages[0].content[0]",
        ),
        (
            "/v1/completions",
            r#"{"messages": [{"role": "user", "content": "hi"}]}"#,
            "prompt",
        ),
        ("/v1/completions", r#"{"prompt": ["a", "b"]}"#, "prompt"),
        (
            "/v1/generate",
            r#"{"prompt": "a", "messages": [{"role": "user", "content": "hi"}]}"#,
            "prompt",
        ),
        ("/tokenize", r#"{}"#, "messages"),
    ];
    for (route, request, param) in bad_inputs {
        let (status, body) = server.post(route, request).await;
        assert_eq!(status, 400, "{route} {request}: {body}");
        assert_eq!(body["error"]["param"], param, "{route} {request}: {body}");
    }

    let huge = json!({"prompt": "w5 ".repeat(10_000)}).to_string();
    let (status, body) = server.post("/v1/completions", huge).await;
    assert_eq!(status, 413);
    assert!(message(&body).contains("16384"), "the limit is named: {body}");

    let (status, body) = server.post("/v1/embeddings", r#"{"input": "x"}"#).await;
    assert_eq!(status, 404);
    assert!(message(&body).contains("/v1/embeddings"), "{body}");
    let response = reqwest::get(server.url("/v1/chat/completions")).await.unwrap();
    assert_eq!(response.status(), 405);

    let request = json!({"model": "hf:other/model", "messages": [{"role": "user", "content": "hi"}]});
    let (status, body) = server.post(CHAT, request.to_string()).await;
    assert_eq!(status, 404);
    assert!(
        message(&body).contains("hf:other/model") && message(&body).contains(Model::Tiny.id()),
        "{body}"
    );

    let response = reqwest::get(server.url("/ready")).await.unwrap();
    assert_eq!(response.status(), 200, "still ready after the bad requests");
    let (status, _) = server
        .post(
            CHAT,
            r#"{"messages": [{"role": "user", "content": "w5"}], "max_tokens": 2}"#,
        )
        .await;
    assert_eq!(status, 200, "and still answers");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_context_overflow_is_a_400_naming_prompt_requested_and_context() {
    let server = TestServer::start(Model::Tiny, ServeArgs::default()).await;
    let prompt = "w5 ".repeat(100);
    let (_, tokenized) = server
        .post("/tokenize", json!({"prompt": prompt}).to_string())
        .await;
    assert_eq!(tokenized["count"], 100);
    assert_eq!(tokenized["max_model_len"], 128);

    for route in ["/v1/completions", "/v1/generate"] {
        let (status, body) = server
            .post(route, json!({"prompt": prompt, "max_tokens": 29}).to_string())
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["param"], "prompt");
        let message = body["error"]["message"].as_str().unwrap();
        for number in ["100 tokens", "29 more", "128 tokens"] {
            assert!(message.contains(number), "{message} should name {number}");
        }
    }
    // A prompt that fills the whole context leaves no room for even one token.
    let (status, body) = server
        .post(
            "/v1/completions",
            json!({"prompt": "w5 ".repeat(128)}).to_string(),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("128 tokens and 1 more"),
        "{body}"
    );
    // Exactly full: admitted.
    let request = json!({"prompt": prompt, "max_tokens": 28, "ignore_eos": true});
    let (status, body) = server.post("/v1/completions", request.to_string()).await;
    assert_eq!(status, 200, "a request that exactly fits is admitted: {body}");
    assert_eq!(body["usage"]["total_tokens"], 128);
    // Huge max_tokens never wrap around: past u32 it is refused by name, within u32 it overflows the
    // context like any other.
    let (status, body) = server
        .post(
            "/v1/completions",
            r#"{"prompt": "w5", "max_tokens": 18446744073709551615}"#,
        )
        .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("max_tokens")),
        "{body}"
    );
    let (status, body) = server
        .post("/v1/completions", r#"{"prompt": "w5", "max_tokens": 4294967295}"#)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4294967295 more"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_key_guards_every_route_but_health() {
    let args = ServeArgs {
        api_key: Some("sesame".to_owned()),
        ..ServeArgs::default()
    };
    let server = TestServer::start(Model::Tiny, args).await;
    let client = reqwest::Client::new();
    let chat = json!({"messages": [{"role": "user", "content": "w5"}], "max_tokens": 2});
    for key in [None, Some("Bearer wrong"), Some("sesame")] {
        let mut request = client.post(server.url(CHAT)).json(&chat);
        if let Some(key) = key {
            request = request.header("authorization", key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{key:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Authorization: Bearer"),
            "{body}"
        );
    }
    for path in ["/ready", "/metrics", "/v1/models"] {
        assert_eq!(
            client.get(server.url(path)).send().await.unwrap().status(),
            401,
            "{path}"
        );
    }
    assert_eq!(
        client.get(server.url("/health")).send().await.unwrap().status(),
        200
    );
    let response = client
        .post(server.url(CHAT))
        .bearer_auth("sesame")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["usage"]["completion_tokens"].as_u64().map(|n| n >= 1),
        Some(true)
    );
    let response = client
        .get(server.url("/ready"))
        .bearer_auth("sesame")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
