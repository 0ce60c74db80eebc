//! OpenAI's response shapes for chat and text completions, whole and streamed: the runtime's job
//! events become `chat.completion.chunk` / `text_completion` chunks, a last chunk with the
//! `finish_reason`, a usage chunk when `stream_options.include_usage` asks for it, then `data: [DONE]`.

use axum::response::sse;
use serde::Serialize;
use serde_json::{Value, json};
use worker_runtime::{Completed, Counts, Event, StopReason};

use super::backend::TokenOutput;

/// Which OpenAI endpoint an answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completion,
}

/// OpenAI's `usage`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    /// Tokens of the prompt after templating.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
}

impl From<Counts> for Usage {
    fn from(counts: Counts) -> Self {
        Usage {
            prompt_tokens: counts.input,
            completion_tokens: counts.output,
            total_tokens: counts.input + counts.output,
        }
    }
}

/// OpenAI's `finish_reason` for a stop reason (`cancelled` is ours: the worker shut down mid-answer).
pub fn finish_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::Complete | StopReason::StopSequence => "stop",
        StopReason::Length => "length",
        StopReason::Cancelled => "cancelled",
    }
}

/// What every response and chunk of one request carries.
#[derive(Debug, Clone)]
pub struct Header {
    /// `chatcmpl-...` or `cmpl-...`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model's id.
    pub model: String,
    /// Chat or text completion.
    pub endpoint: Endpoint,
    /// Choices per answer (OpenAI's `n`).
    pub choices: usize,
}

impl Header {
    /// A fresh id and timestamp for one request of `choices` choices.
    pub fn new(endpoint: Endpoint, model: &str, choices: usize) -> Self {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completion => "cmpl",
        };
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Header {
            id: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
            created,
            model: model.to_owned(),
            endpoint,
            choices: choices.max(1),
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completion, _) => "text_completion",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// The whole answer of a request that did not stream.
    pub fn response(&self, done: &Completed<TokenOutput>) -> Value {
        let choices: Vec<Value> = (0..self.choices)
            .map(|index| {
                let outputs = done.outputs.iter().filter(|output| output.index == index);
                let text: String = outputs.clone().map(|output| output.text.as_str()).collect();
                let finish = match self.choices {
                    1 => finish_reason(done.stop_reason),
                    _ => outputs
                        .filter_map(|output| output.finish_reason)
                        .next_back()
                        .unwrap_or("cancelled"),
                };
                match self.endpoint {
                    Endpoint::Chat => json!({
                        "index": index,
                        "message": { "role": "assistant", "content": text },
                        "logprobs": null,
                        "finish_reason": finish,
                    }),
                    Endpoint::Completion => {
                        json!({ "index": index, "text": text, "logprobs": null, "finish_reason": finish })
                    }
                }
            })
            .collect();
        let mut body = self.envelope(false, json!(choices));
        body["usage"] = json!(Usage::from(done.counts));
        body
    }

    fn choice_chunk(&self, index: usize, text: Option<&str>, first: bool, finish: Option<&str>) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => {
                let mut delta = json!({});
                if first {
                    delta["role"] = json!("assistant");
                }
                if let Some(text) = text {
                    delta["content"] = json!(text);
                }
                json!({ "index": index, "delta": delta, "logprobs": null, "finish_reason": finish })
            }
            Endpoint::Completion => {
                json!({ "index": index, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish })
            }
        };
        self.envelope(true, json!([choice]))
    }
}

/// Turns a job's events into OpenAI's stream, one event at a time.
#[derive(Debug)]
pub struct ChunkWriter {
    header: Header,
    include_usage: bool,
    /// Whether each choice has sent its first chunk.
    started: Vec<bool>,
}

impl ChunkWriter {
    /// A writer for one streamed request.
    pub fn new(header: Header, include_usage: bool) -> Self {
        ChunkWriter {
            started: vec![false; header.choices],
            header,
            include_usage,
        }
    }

    fn data(&self, mut chunk: Value) -> sse::Event {
        if self.include_usage && chunk.get("usage").is_none() {
            chunk["usage"] = Value::Null;
        }
        sse::Event::default().data(chunk.to_string())
    }

    /// The SSE events (none, one or several) one job event becomes.
    pub fn on_event(&mut self, event: Event<TokenOutput>) -> Vec<sse::Event> {
        let several = self.header.choices > 1;
        match event {
            Event::Output { output, .. } if output.index >= self.started.len() => Vec::new(),
            Event::Output { output, .. } => {
                let index = output.index;
                let first = !self.started[index];
                self.started[index] = true;
                let mut events = Vec::new();
                if first || !output.text.is_empty() {
                    events.push(self.data(self.header.choice_chunk(index, Some(&output.text), first, None)));
                }
                // With several choices each ends on its own: its finish chunk follows its last token.
                if let Some(finish) = output.finish_reason.filter(|_| several) {
                    events.push(self.data(self.header.choice_chunk(index, None, false, Some(finish))));
                }
                events
            }
            Event::End { stop_reason, counts } => {
                let mut events = Vec::new();
                if !several {
                    let first = !self.started[0];
                    let finish = finish_reason(stop_reason);
                    events.push(self.data(self.header.choice_chunk(0, None, first, Some(finish))));
                }
                if self.include_usage {
                    let mut usage = self.header.envelope(true, json!([]));
                    usage["usage"] = json!(Usage::from(counts));
                    events.push(self.data(usage));
                }
                events.push(sse::Event::default().data("[DONE]"));
                events
            }
            Event::Error { code, message } => {
                let error = json!({ "error": { "message": message, "type": "server_error", "param": null, "code": code } });
                vec![
                    sse::Event::default().data(error.to_string()),
                    sse::Event::default().data("[DONE]"),
                ]
            }
            Event::Started { .. } | Event::Progress { .. } | Event::Metrics(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(endpoint: Endpoint) -> Header {
        Header {
            id: "x-1".into(),
            created: 1,
            model: "m".into(),
            endpoint,
            choices: 1,
        }
    }

    #[test]
    fn a_chat_stream_opens_with_the_role_and_ends_with_usage_then_done() {
        let mut writer = ChunkWriter::new(header(Endpoint::Chat), true);
        let output = |text: &str| Event::Output {
            index: 0,
            output: TokenOutput {
                text: text.into(),
                token_id: 1,
                index: 0,
                finish_reason: None,
            },
        };
        assert_eq!(writer.on_event(output("Hel")).len(), 1);
        assert!(
            writer.on_event(output("")).is_empty(),
            "empty pieces send no chunk"
        );
        let end = writer.on_event(Event::End {
            stop_reason: StopReason::Length,
            counts: Counts { input: 3, output: 2 },
        });
        assert_eq!(end.len(), 3);
        let first = header(Endpoint::Chat).choice_chunk(0, Some("Hel"), true, None);
        assert_eq!(
            first["choices"][0]["delta"],
            json!({"role": "assistant", "content": "Hel"})
        );
        assert_eq!(first["object"], "chat.completion.chunk");
    }

    #[test]
    fn a_whole_completion_has_text_finish_reason_and_usage() {
        let done = Completed {
            outputs: vec![
                TokenOutput {
                    text: "a".into(),
                    token_id: 1,
                    index: 0,
                    finish_reason: None,
                },
                TokenOutput {
                    text: "b".into(),
                    token_id: 2,
                    index: 0,
                    finish_reason: Some("stop"),
                },
            ],
            stop_reason: StopReason::Complete,
            counts: Counts { input: 4, output: 2 },
            metrics: Default::default(),
        };
        let body = header(Endpoint::Completion).response(&done);
        assert_eq!(body["choices"][0]["text"], "ab");
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert_eq!(body["usage"]["total_tokens"], 6);
        assert_eq!(body["object"], "text_completion");
    }

    #[test]
    fn several_choices_stream_and_end_each_with_its_index() {
        let mut h = header(Endpoint::Completion);
        h.choices = 2;
        let mut writer = ChunkWriter::new(h.clone(), false);
        let output = |index: usize, text: &str, finish: Option<&'static str>| Event::Output {
            index: 0,
            output: TokenOutput {
                text: text.into(),
                token_id: 1,
                index,
                finish_reason: finish,
            },
        };
        assert_eq!(writer.on_event(output(1, "b", None)).len(), 1);
        assert_eq!(writer.on_event(output(0, "a", Some("length"))).len(), 2);
        assert_eq!(writer.on_event(output(1, "c", Some("stop"))).len(), 2);
        let end = writer.on_event(Event::End {
            stop_reason: StopReason::Length,
            counts: Counts { input: 3, output: 3 },
        });
        assert_eq!(end.len(), 1, "only [DONE]: each choice sent its finish chunk");
        let done = Completed {
            outputs: vec![
                TokenOutput {
                    text: "b".into(),
                    token_id: 1,
                    index: 1,
                    finish_reason: None,
                },
                TokenOutput {
                    text: "a".into(),
                    token_id: 1,
                    index: 0,
                    finish_reason: Some("length"),
                },
                TokenOutput {
                    text: "c".into(),
                    token_id: 1,
                    index: 1,
                    finish_reason: Some("stop"),
                },
            ],
            stop_reason: StopReason::Length,
            counts: Counts { input: 3, output: 3 },
            metrics: Default::default(),
        };
        let body = h.response(&done);
        assert_eq!(body["choices"][0]["text"], "a");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(body["choices"][1]["text"], "bc");
        assert_eq!(body["choices"][1]["finish_reason"], "stop");
    }
}
