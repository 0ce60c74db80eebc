//! The request body shared by every generation route (OpenAI's chat and completions, the native
//! `/v1/generate`, `/tokenize`), and its validation into the engine's [`Prompt`] and
//! [`GenerationParams`], naming the field at fault.
//!
//! OpenAI's field names and ranges are kept (`max_tokens`/`max_completion_tokens`, `temperature` in
//! [0, 2], `stop` as a string or a list of up to 4...), plus the usual extensions of OpenAI-compatible
//! servers (`top_k`, `min_p`, `repetition_penalty`, `ignore_eos`). Fields we do not know are ignored.

use serde::Deserialize;
use worker_runtime::WorkerError;

use crate::chat::{ChatMessage, Role};
use crate::params::{GenerationParams, Prompt};

/// A generation request as any of the routes receive it.
#[derive(Debug, Default, Deserialize)]
pub struct GenerateRequest {
    /// The model asked for; when given it must be the one this worker serves.
    pub model: Option<String>,
    /// Chat messages (`/v1/chat/completions`).
    pub messages: Option<Vec<MessageIn>>,
    /// Text to continue (`/v1/completions`).
    pub prompt: Option<PromptIn>,
    /// Tokens to generate at most (OpenAI's older name).
    pub max_tokens: Option<u64>,
    /// Tokens to generate at most (OpenAI's newer name; wins over `max_tokens`).
    pub max_completion_tokens: Option<u64>,
    /// Sampling temperature in [0, 2]; 0 is greedy.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass in (0, 1].
    pub top_p: Option<f64>,
    /// Keep the k most likely tokens; 0 or -1 is off.
    pub top_k: Option<i64>,
    /// Minimum probability relative to the most likely token, in [0, 1].
    pub min_p: Option<f64>,
    /// HF-style repetition penalty, > 0 (1 is off).
    pub repetition_penalty: Option<f32>,
    /// OpenAI presence penalty in [-2, 2].
    pub presence_penalty: Option<f32>,
    /// OpenAI frequency penalty in [-2, 2].
    pub frequency_penalty: Option<f32>,
    /// Up to 4 strings that end the generation.
    pub stop: Option<StopIn>,
    /// Seed for reproducible sampling.
    pub seed: Option<u64>,
    /// Stream Server-Sent Events instead of one JSON body.
    pub stream: Option<bool>,
    /// `include_usage`: a last chunk with the token counts.
    pub stream_options: Option<StreamOptions>,
    /// Number of choices, 1 to [`MAX_CHOICES`]; they share the prompt's cache blocks.
    pub n: Option<u64>,
    /// Generate past end-of-sequence tokens (vLLM's extension, for benchmarks).
    pub ignore_eos: Option<bool>,
}

/// The most choices (`n`) one request may ask for.
pub const MAX_CHOICES: u64 = 16;

/// One chat message as OpenAI sends it.
#[derive(Debug, Deserialize)]
pub struct MessageIn {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// A string, or a list of parts of which only `text` parts are supported.
    pub content: ContentIn,
}

/// Message content: a string or a list of typed parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ContentIn {
    /// Plain text.
    Text(String),
    /// `[{"type": "text", "text": "..."}]`.
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Debug, Deserialize)]
pub struct ContentPart {
    /// `text` (others, like `image_url`, are refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    pub text: Option<String>,
}

/// `prompt`: a string, or a list holding one string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptIn {
    /// One prompt.
    Text(String),
    /// A batch; only a batch of one is supported.
    Batch(Vec<String>),
}

/// `stop`: a string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopIn {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// OpenAI's `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// Which input a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// `messages` only.
    Chat,
    /// `prompt` only.
    Text,
    /// Either one (the native routes).
    Either,
}

/// A request checked and turned into what the engine takes.
#[derive(Debug)]
pub struct Parsed {
    /// The input.
    pub prompt: Prompt,
    /// The name of the request field the prompt came from, for errors about it.
    pub prompt_field: &'static str,
    /// Sampling and stopping.
    pub params: GenerationParams,
    /// Whether to stream.
    pub stream: bool,
    /// Whether a streamed answer ends with a usage chunk.
    pub include_usage: bool,
    /// Choices to generate.
    pub n: usize,
}

impl GenerateRequest {
    /// Checks every field against its documented range and builds the engine's request.
    pub fn parse(self, input: Input) -> Result<Parsed, WorkerError> {
        let (prompt, prompt_field) = self.prompt_of(input)?;
        let params = self.params()?;
        let n = match self.n {
            None => 1,
            Some(n) if (1..=MAX_CHOICES).contains(&n) => n as usize,
            Some(n) => {
                return Err(WorkerError::invalid(
                    "n",
                    format!("n must be between 1 and {MAX_CHOICES}, got {n}"),
                ));
            }
        };
        Ok(Parsed {
            n,
            prompt,
            prompt_field,
            params,
            stream: self.stream.unwrap_or(false),
            include_usage: self
                .stream_options
                .as_ref()
                .is_some_and(|options| options.include_usage),
        })
    }

    /// The prompt alone, for `/tokenize`.
    pub fn prompt_of(&self, input: Input) -> Result<(Prompt, &'static str), WorkerError> {
        let chat = |messages: &[MessageIn]| Ok((Prompt::Chat(chat_messages(messages)?), "messages"));
        let text = |prompt: &PromptIn| Ok((Prompt::Text(prompt_text(prompt)?), "prompt"));
        match (input, &self.messages, &self.prompt) {
            (Input::Chat, Some(messages), _) => chat(messages),
            (Input::Chat, None, _) => Err(WorkerError::invalid("messages", "`messages` is required")),
            (Input::Text, _, Some(prompt)) => text(prompt),
            (Input::Text, _, None) => Err(WorkerError::invalid("prompt", "`prompt` is required")),
            (Input::Either, Some(messages), None) => chat(messages),
            (Input::Either, None, Some(prompt)) => text(prompt),
            (Input::Either, Some(_), Some(_)) => Err(WorkerError::invalid(
                "prompt",
                "give either `messages` or `prompt`, not both",
            )),
            (Input::Either, None, None) => {
                Err(WorkerError::invalid("messages", "give `messages` or `prompt`"))
            }
        }
    }

    fn params(&self) -> Result<GenerationParams, WorkerError> {
        let max_tokens = match (self.max_completion_tokens, self.max_tokens) {
            (Some(max), _) => Some(("max_completion_tokens", max)),
            (None, Some(max)) => Some(("max_tokens", max)),
            (None, None) => None,
        };
        let max_tokens = match max_tokens {
            None => None,
            Some((field, 0)) => {
                return Err(WorkerError::invalid(field, format!("{field} must be at least 1")));
            }
            Some((field, max)) => Some(u32::try_from(max).map_err(|_| {
                WorkerError::invalid(
                    field,
                    format!(
                        "{field} must be at most {} (and fit the context), got {max}",
                        u32::MAX
                    ),
                )
            })?),
        };
        in_range("temperature", self.temperature, 0.0, 2.0)?;
        in_range("min_p", self.min_p, 0.0, 1.0)?;
        in_range(
            "presence_penalty",
            self.presence_penalty.map(f64::from),
            -2.0,
            2.0,
        )?;
        in_range(
            "frequency_penalty",
            self.frequency_penalty.map(f64::from),
            -2.0,
            2.0,
        )?;
        if let Some(top_p) = self.top_p
            && !(top_p > 0.0 && top_p <= 1.0)
        {
            return Err(WorkerError::invalid(
                "top_p",
                format!("top_p must be in (0, 1], got {top_p}"),
            ));
        }
        if let Some(penalty) = self.repetition_penalty
            && !(penalty.is_finite() && penalty > 0.0)
        {
            return Err(WorkerError::invalid(
                "repetition_penalty",
                format!("repetition_penalty must be > 0, got {penalty}"),
            ));
        }
        let top_k = match self.top_k {
            None | Some(-1) | Some(0) => None,
            Some(k) if k > 0 => Some(k as usize),
            Some(k) => {
                return Err(WorkerError::invalid(
                    "top_k",
                    format!("top_k must be >= 1, or 0 or -1 for off; got {k}"),
                ));
            }
        };
        let stop = match &self.stop {
            None => Vec::new(),
            Some(StopIn::One(stop)) => vec![stop.clone()],
            Some(StopIn::Many(stops)) => stops.clone(),
        };
        if stop.len() > 4 {
            return Err(WorkerError::invalid(
                "stop",
                format!("at most 4 stop strings, got {}", stop.len()),
            ));
        }
        if stop.iter().any(String::is_empty) {
            return Err(WorkerError::invalid("stop", "stop strings must not be empty"));
        }
        Ok(GenerationParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k,
            min_p: self.min_p,
            max_tokens,
            seed: self.seed,
            stop,
            stop_token_ids: Vec::new(),
            repetition_penalty: self.repetition_penalty,
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            ignore_eos: self.ignore_eos.unwrap_or(false),
        })
    }
}

fn in_range(field: &str, value: Option<f64>, low: f64, high: f64) -> Result<(), WorkerError> {
    match value {
        Some(v) if !(low..=high).contains(&v) => Err(WorkerError::invalid(
            field,
            format!("{field} must be between {low} and {high}, got {v}"),
        )),
        _ => Ok(()),
    }
}

fn chat_messages(messages: &[MessageIn]) -> Result<Vec<ChatMessage>, WorkerError> {
    if messages.is_empty() {
        return Err(WorkerError::invalid(
            "messages",
            "`messages` must hold at least one message",
        ));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, message)| {
            let role = match message.role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(WorkerError::invalid(
                        format!("messages[{i}].role"),
                        format!("unsupported role `{other}`: use system, developer, user or assistant"),
                    ));
                }
            };
            let content = match &message.content {
                ContentIn::Text(text) => text.clone(),
                ContentIn::Parts(parts) => {
                    let mut text = String::new();
                    for (j, part) in parts.iter().enumerate() {
                        match (part.kind.as_str(), &part.text) {
                            ("text", Some(part_text)) => text.push_str(part_text),
                            (kind, _) => {
                                return Err(WorkerError::invalid(
                                    format!("messages[{i}].content[{j}]"),
                                    format!(
                                        "unsupported content part `{kind}`: this model reads text parts only"
                                    ),
                                ));
                            }
                        }
                    }
                    text
                }
            };
            Ok(ChatMessage::new(role, content))
        })
        .collect()
}

fn prompt_text(prompt: &PromptIn) -> Result<String, WorkerError> {
    match prompt {
        PromptIn::Text(text) => Ok(text.clone()),
        PromptIn::Batch(batch) if batch.len() == 1 => Ok(batch[0].clone()),
        PromptIn::Batch(batch) => Err(WorkerError::invalid(
            "prompt",
            format!("one prompt per request is supported, got {}", batch.len()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str, input: Input) -> Result<Parsed, WorkerError> {
        worker_runtime::parse_json::<GenerateRequest>(body.as_bytes())?.parse(input)
    }

    fn param_of(body: &str, input: Input) -> String {
        match parse(body, input).unwrap_err() {
            WorkerError::InvalidRequest { param, .. } => param.unwrap_or_default(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn openai_fields_become_engine_params() {
        let body = r#"{"model": "m", "messages": [{"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "max_tokens": 9, "max_completion_tokens": 5, "temperature": 0.5, "top_p": 0.9, "top_k": -1,
            "stop": "\n", "seed": 7, "stream": true, "stream_options": {"include_usage": true},
            "presence_penalty": 0.1, "logit_bias": {"1": 2}, "user": "someone"}"#;
        let parsed = parse(body, Input::Chat).unwrap();
        assert_eq!(
            parsed.prompt,
            Prompt::Chat(vec![
                ChatMessage::new(Role::System, "be brief"),
                ChatMessage::new(Role::User, "hi")
            ])
        );
        assert_eq!(parsed.params.max_tokens, Some(5));
        assert_eq!(parsed.params.top_k, None);
        assert_eq!(parsed.params.stop, vec!["\n".to_owned()]);
        assert_eq!(parsed.params.seed, Some(7));
        assert!(parsed.stream && parsed.include_usage);
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        assert_eq!(
            param_of(
                r#"{"messages": [{"role": "user", "content": "x"}], "temperature": 3}"#,
                Input::Chat
            ),
            "temperature"
        );
        assert_eq!(param_of(r#"{"prompt": "x", "top_p": 0}"#, Input::Text), "top_p");
        assert_eq!(
            param_of(r#"{"prompt": "x", "max_tokens": 0}"#, Input::Text),
            "max_tokens"
        );
        assert_eq!(param_of(r#"{"prompt": "x", "n": 0}"#, Input::Text), "n");
        assert_eq!(param_of(r#"{"prompt": "x", "n": 17}"#, Input::Text), "n");
        assert_eq!(parse(r#"{"prompt": "x", "n": 3}"#, Input::Text).unwrap().n, 3);
        assert_eq!(
            param_of(r#"{"prompt": "x", "stop": ["a","b","c","d","e"]}"#, Input::Text),
            "stop"
        );
        assert_eq!(
            param_of(r#"{"messages": [{"role": "tool", "content": "x"}]}"#, Input::Chat),
            "messages[0].role"
        );
        assert_eq!(param_of(r#"{"messages": []}"#, Input::Chat), "messages");
        assert_eq!(param_of(r#"{"prompt": "x"}"#, Input::Chat), "messages");
        assert_eq!(param_of(r#"{"prompt": ["a", "b"]}"#, Input::Text), "prompt");
        assert_eq!(
            param_of(r#"{"prompt": "x", "messages": []}"#, Input::Either),
            "prompt"
        );
        assert_eq!(
            param_of(r#"{"prompt": "x", "max_tokens": "ten"}"#, Input::Text),
            "max_tokens"
        );
        assert_eq!(
            param_of(
                r#"{"prompt": "x", "max_tokens": 18446744073709551615}"#,
                Input::Text
            ),
            "max_tokens"
        );
    }
}
