//! The official `openai` Python client against SmolLM2 served over loopback: streamed and whole answers
//! agree with each other and with the engine in process (and name Paris), errors arrive as the client's
//! typed exceptions, and /metrics parses with prometheus_client's strict OpenMetrics parser.

use serde_json::{Value, json};
use worker_llm::{ChatMessage, Prompt, Role};
use worker_runtime::ServeArgs;

use crate::common::{Model, TestServer, python};

const CLIENT: &str = include_str!("openai_client.py");

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_python_client_streams_and_not() {
    let args = ServeArgs {
        api_key: Some("test-key".to_owned()),
        ..ServeArgs::default()
    };
    let server = TestServer::start(Model::SmolLm2, args).await;
    let python = python();
    let base = server.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", CLIENT, &base, Model::SmolLm2.id(), "test-key"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "the client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();

    let chat = Prompt::Chat(vec![
        ChatMessage::new(Role::System, "You are a helpful assistant."),
        ChatMessage::new(Role::User, "What is the capital of France?"),
    ]);
    let (expected, usage) = Model::SmolLm2.greedy(&chat, 12);
    assert!(expected.contains("Paris"), "the engine answers: {expected}");
    assert_eq!(
        seen["chat"]["text"],
        expected.as_str(),
        "whole chat answer = the engine's"
    );
    assert_eq!(seen["chat"]["role"], "assistant");
    assert_eq!(seen["chat"]["object"], "chat.completion");
    assert_eq!(seen["chat"]["usage"]["prompt_tokens"], usage.prompt_tokens);
    assert_eq!(
        seen["chat"]["usage"]["completion_tokens"],
        usage.completion_tokens
    );
    assert_eq!(
        seen["chat"]["usage"]["total_tokens"],
        usage.prompt_tokens + usage.completion_tokens
    );
    let finish = if usage.completion_tokens == 12 {
        "length"
    } else {
        "stop"
    };
    assert_eq!(seen["chat"]["finish_reason"], finish);

    let stream = &seen["chat_stream"];
    assert_eq!(
        stream["text"],
        expected.as_str(),
        "streamed chat answer = the engine's"
    );
    assert_eq!(stream["first_role"], "assistant");
    assert_eq!(stream["finish_reasons"], json!([finish]));
    assert_eq!(stream["usage"]["completion_tokens"], usage.completion_tokens);
    assert_eq!(stream["usage"]["prompt_tokens"], usage.prompt_tokens);
    assert_eq!(
        stream["ids"].as_array().unwrap().len(),
        1,
        "every chunk carries the same id"
    );
    assert_eq!(stream["object"], "chat.completion.chunk");

    let (expected, usage) = Model::SmolLm2.greedy(&Prompt::Text("The capital of France is".to_owned()), 8);
    assert!(expected.contains("Paris"), "the engine continues: {expected}");
    assert_eq!(seen["completion"]["text"], expected.as_str());
    assert_eq!(seen["completion"]["usage"]["prompt_tokens"], usage.prompt_tokens);
    assert_eq!(seen["completion_stream"]["text"], expected.as_str());
    assert_eq!(
        seen["completion_stream"]["finish_reasons"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    assert_eq!(seen["models"], json!([Model::SmolLm2.id()]));
    assert_eq!(seen["bad_temperature"]["status"], 400);
    assert_eq!(seen["bad_temperature"]["param"], "temperature");
    assert_eq!(seen["unknown_model"]["status"], 404);
    assert!(
        seen["unknown_model"]["message"]
            .as_str()
            .unwrap()
            .contains("hf:nobody/nothing")
    );
    assert_eq!(seen["wrong_key"]["status"], 401);

    let metrics = seen["metrics"].as_array().unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| {
        metrics
            .iter()
            .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
            .map(|s| s["value"].as_f64().unwrap())
    };
    let requests = |route: &str, status: &str| {
        value(
            "worker_http_requests_total",
            &[("route", route), ("status", status)],
        )
    };
    assert_eq!(requests("/v1/chat/completions", "200"), Some(2.0));
    assert_eq!(requests("/v1/completions", "200"), Some(2.0));
    assert_eq!(requests("/v1/chat/completions", "400"), Some(1.0));
    assert_eq!(requests("/v1/chat/completions", "404"), Some(1.0));
    assert_eq!(value("worker_queue_depth", &[]), Some(0.0));
    assert_eq!(value("worker_jobs_running", &[]), Some(0.0));
    assert_eq!(value("worker_time_to_first_output_seconds_count", &[]), Some(4.0));
    assert!(value("worker_outputs_total", &[]).unwrap() >= 4.0);
    assert!(value("worker_model_load_seconds", &[]).unwrap() > 0.0);
}
