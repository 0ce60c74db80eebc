//! The routes' shapes with the tiny model: OpenAI chat and text completions whole and streamed (role
//! first, text, finish reason, usage chunk, `[DONE]`), `stop` and `length`, `/v1/models`, the native
//! `/v1/generate` stream and `/tokenize`, and unknown fields ignored.

use serde_json::{Value, json};
use worker_llm::{ChatMessage, Prompt, Role};
use worker_runtime::ServeArgs;

use crate::common::{Model, TestServer, sse_events};

fn hello() -> Prompt {
    Prompt::Chat(vec![ChatMessage::new(Role::User, "w5 w6 w7")])
}

/// The JSON chunks of an OpenAI stream, checking it ends with `[DONE]`.
fn chunks(body: &str) -> Vec<Value> {
    let events = sse_events(body);
    assert_eq!(
        events.last().map(|(_, data)| data.as_str()),
        Some("[DONE]"),
        "{body}"
    );
    events[..events.len() - 1]
        .iter()
        .map(|(_, data)| serde_json::from_str(data).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_completions_whole_and_streamed_agree_with_the_engine() {
    let server = TestServer::start(Model::Tiny, ServeArgs::default()).await;
    let (expected, usage) = Model::Tiny.greedy(&hello(), 6);
    assert!(!expected.is_empty());
    let request = json!({
        "model": Model::Tiny.id(), "messages": [{"role": "user", "content": "w5 w6 w7"}],
        "max_tokens": 6, "temperature": 0, "logit_bias": {"5": 1}, "user": "someone", "not_a_field": [1],
    });
    let (status, body) = server.post("/v1/chat/completions", request.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], Model::Tiny.id());
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], expected.as_str());
    let finish = if usage.completion_tokens == 6 {
        "length"
    } else {
        "stop"
    };
    assert_eq!(choice["finish_reason"], finish);
    assert_eq!(body["usage"]["prompt_tokens"], usage.prompt_tokens);
    assert_eq!(body["usage"]["completion_tokens"], usage.completion_tokens);
    assert_eq!(
        body["usage"]["total_tokens"],
        usage.prompt_tokens + usage.completion_tokens
    );

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (status, text) = server.post_text("/v1/chat/completions", &streamed).await;
    assert_eq!(status, 200);
    let chunks = chunks(&text);
    let id = chunks[0]["id"].clone();
    assert!(
        chunks
            .iter()
            .all(|c| c["id"] == id && c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let (usage_chunk, with_choices) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], usage.completion_tokens);
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], usage.prompt_tokens);
    assert!(
        with_choices.iter().all(|c| c["usage"].is_null()),
        "usage only in the last chunk"
    );
    let text: String = with_choices
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, expected);
    let finishes: Vec<&Value> = with_choices
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(
        finishes,
        [&json!(finish)],
        "one finish_reason, in the last chunk with choices"
    );
    assert!(!with_choices.last().unwrap()["choices"][0]["finish_reason"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn completions_stop_at_a_stop_string_or_at_max_tokens() {
    let server = TestServer::start(Model::Tiny, ServeArgs::default()).await;
    let prompt = Prompt::Text("w9 w10 w11".to_owned());
    let (full, usage) = Model::Tiny.greedy(&prompt, 12);
    let words: Vec<&str> = full.split(' ').collect();
    assert!(
        words.len() >= 4,
        "the tiny model says enough to pick a stop string from: {full:?}"
    );

    // length: exactly max_tokens tokens, finish_reason "length".
    let request = json!({"prompt": "w9 w10 w11", "max_tokens": 3, "temperature": 0, "ignore_eos": true});
    let (status, body) = server.post("/v1/completions", request.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 3);
    assert_eq!(body["choices"][0]["text"], words[..3].join(" "));

    // stop: the text ends before the stop string, finish_reason "stop", streamed and not.
    let stop = format!(" {}", words[2]);
    let expected = &full[..full.find(&stop).unwrap()];
    let request = json!({"prompt": ["w9 w10 w11"], "max_tokens": 12, "temperature": 0, "stop": [stop]});
    let (status, body) = server.post("/v1/completions", request.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["text"], expected);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() < usage.completion_tokens as u64);

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let (status, text) = server.post_text("/v1/completions", &streamed).await;
    assert_eq!(status, 200);
    let chunks = chunks(&text);
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "text_completion" && c.get("usage").is_none())
    );
    let text: String = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, expected);
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn models_native_generate_and_tokenize() {
    let server = TestServer::start(Model::Tiny, ServeArgs::default()).await;
    let models: Value = reqwest::get(server.url("/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], Model::Tiny.id());
    assert_eq!(models["data"].as_array().unwrap().len(), 1);

    let request =
        json!({"messages": [{"role": "user", "content": "w5 w6 w7"}], "max_tokens": 6, "temperature": 0});
    let response = reqwest::Client::new()
        .post(server.url("/v1/generate"))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = sse_events(&response.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"started"));
    assert_eq!(&names[names.len() - 2..], ["metrics", "end"]);
    let outputs: Vec<Value> = events
        .iter()
        .filter(|(name, _)| name == "output")
        .map(|(_, data)| serde_json::from_str(data).unwrap())
        .collect();
    for (i, output) in outputs.iter().enumerate() {
        assert_eq!(output["index"], i, "outputs are numbered in order");
    }
    let (expected, usage) = Model::Tiny.greedy(&hello(), 6);
    let text: String = outputs
        .iter()
        .map(|o| o["output"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, expected);
    assert_eq!(outputs.len(), usage.completion_tokens, "one output per token");
    let end: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert_eq!(end["counts"]["input"], usage.prompt_tokens);
    assert_eq!(end["counts"]["output"], usage.completion_tokens);

    let (status, body) = server
        .post(
            "/tokenize",
            r#"{"messages": [{"role": "system", "content": "w8"}, {"role": "user", "content": "w9 x"}]}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let prompt = Prompt::Chat(vec![
        ChatMessage::new(Role::System, "w8"),
        ChatMessage::new(Role::User, "w9 x"),
    ]);
    let expected = Model::Tiny.engine().tokenize(&prompt).unwrap();
    assert_eq!(body["tokens"], json!(expected));
    assert_eq!(body["count"], expected.len());
    assert_eq!(body["max_model_len"], 128);
    let (_, body) = server.post("/tokenize", r#"{"prompt": "w200 w201"}"#).await;
    assert_eq!(body["tokens"], json!([200, 201]));
}
