//! What a request asks for and what it gets back: sampling parameters named after the OpenAI fields,
//! streamed token events, the finish reason and the token counts.

use serde::{Deserialize, Serialize};

use crate::chat::ChatMessage;
use crate::error::{LlmError, Result};

/// The input of one request: raw text continued as is, or chat messages rendered with the model's template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prompt {
    /// Text the model continues (a completion); BOS is added when the tokenizer asks for it.
    Text(String),
    /// Messages rendered through the chat template, with the generation prompt appended.
    Chat(Vec<ChatMessage>),
}

/// Sampling and stopping settings of one request. `None` fields take the model's
/// `generation_config.json` value, then the OpenAI default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationParams {
    /// Softmax temperature; 0 means greedy (argmax). Default 1.
    pub temperature: Option<f64>,
    /// Nucleus sampling: keep the smallest set of tokens whose probability sums to this. Default 1 (off).
    pub top_p: Option<f64>,
    /// Keep only the k most likely tokens; 0 or none means off.
    pub top_k: Option<usize>,
    /// Drop tokens whose probability is below this fraction of the most likely one's. Default 0 (off).
    pub min_p: Option<f64>,
    /// Tokens to generate at most; none means up to the end of the context window. The prompt plus
    /// this must fit the context ([`check_context`]).
    pub max_tokens: Option<u32>,
    /// Seed of the sampler: the same seed, prompt and settings give the same output.
    pub seed: Option<u64>,
    /// Strings that end the generation; the text returned stops before them and never shows part of one.
    pub stop: Vec<String>,
    /// Token ids that end the generation, besides the model's end-of-sequence tokens.
    pub stop_token_ids: Vec<u32>,
    /// HF-style penalty (> 1 discourages) on every token already in the prompt or the output. Default 1.
    pub repetition_penalty: Option<f32>,
    /// OpenAI penalty subtracted once per earlier occurrence of a token in the output. Default 0.
    pub frequency_penalty: f32,
    /// OpenAI penalty subtracted once for any token already present in the output. Default 0.
    pub presence_penalty: f32,
    /// Keep generating past end-of-sequence tokens (benchmarks need a fixed length; vLLM's extension).
    pub ignore_eos: bool,
}

impl GenerationParams {
    /// Rejects values no sampler can honour, with the field's name, before any work starts.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(LlmError::InvalidRequest(msg));
        if let Some(t) = self.temperature
            && !(t.is_finite() && t >= 0.0)
        {
            return bad(format!("temperature must be a number >= 0, got {t}"));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return bad(format!("top_p must be in (0, 1], got {p}"));
        }
        if let Some(p) = self.min_p
            && !(0.0..=1.0).contains(&p)
        {
            return bad(format!("min_p must be in [0, 1], got {p}"));
        }
        if let Some(r) = self.repetition_penalty
            && !(r.is_finite() && r > 0.0)
        {
            return bad(format!("repetition_penalty must be > 0, got {r}"));
        }
        for (name, v) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return bad(format!("{name} must be in [-2, 2], got {v}"));
            }
        }
        if self.max_tokens == Some(0) {
            return bad("max_tokens must be at least 1".into());
        }
        if self.stop.iter().any(|s| s.is_empty()) {
            return bad("stop strings must not be empty".into());
        }
        Ok(())
    }
}

/// The number of tokens a request may generate: `max_tokens`, or when absent the rest of the context
/// window. The prompt plus that must fit `context_length` (checked arithmetic: no `max_tokens` wraps
/// around); an empty prompt has nothing to continue from.
pub fn check_context(prompt_tokens: usize, max_tokens: Option<u32>, context_length: usize) -> Result<usize> {
    if prompt_tokens == 0 {
        return Err(LlmError::EmptyPrompt);
    }
    let requested = match max_tokens {
        Some(max) => max as usize,
        None => context_length.saturating_sub(prompt_tokens).max(1),
    };
    match prompt_tokens.checked_add(requested) {
        Some(total) if total <= context_length => Ok(requested),
        _ => Err(LlmError::ContextOverflow {
            prompt_tokens,
            requested_tokens: requested,
            context_length,
        }),
    }
}

/// One step of a streamed generation, handed to the caller's callback as soon as the token is sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEvent {
    /// The sampled token.
    pub token_id: u32,
    /// Text that became final with this token: valid UTF-8, never part of a stop string; often empty
    /// (a multi-byte character split over tokens, or text held back until a stop string is ruled out).
    pub text: String,
    /// How many tokens have been generated, this one included.
    pub generated_tokens: usize,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An end-of-sequence token, a stop token id or a stop string.
    Stop,
    /// `max_tokens` or the context window was reached.
    Length,
    /// The caller's callback asked to stop.
    Cancelled,
}

impl FinishReason {
    /// The wire name: OpenAI's `stop` and `length`, and `cancelled` for a request its caller ended.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// Token counts of one request, as OpenAI's `usage` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt after templating.
    pub prompt_tokens: usize,
    /// Tokens sampled, the stopping one included.
    pub completion_tokens: usize,
}

/// Where the time of one request went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Prompt processing (prefill), in seconds.
    pub prefill_s: f64,
    /// From the start of the request to the first sampled token, in seconds.
    pub time_to_first_token_s: f64,
    /// From the first sampled token to the last, in seconds.
    pub decode_s: f64,
}

impl Timings {
    /// Prompt tokens per second of prefill.
    pub fn prefill_tokens_per_s(&self, usage: &Usage) -> f64 {
        per_second(usage.prompt_tokens, self.prefill_s)
    }

    /// Generated tokens per second after the first one (the decode speed).
    pub fn decode_tokens_per_s(&self, usage: &Usage) -> f64 {
        per_second(usage.completion_tokens.saturating_sub(1), self.decode_s)
    }
}

fn per_second(n: usize, s: f64) -> f64 {
    if s > 0.0 { n as f64 / s } else { 0.0 }
}

/// The result of one request once it has ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// All text generated, stop string excluded.
    pub text: String,
    /// Every sampled token id.
    pub token_ids: Vec<u32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// Time spent.
    pub timings: Timings,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_plus_max_tokens_must_fit_the_context() {
        assert_eq!(check_context(10, Some(6), 16).unwrap(), 6);
        assert!(matches!(
            check_context(10, Some(7), 16),
            Err(LlmError::ContextOverflow {
                requested_tokens: 7,
                ..
            })
        ));
        // Absent: the rest of the context; a full prompt leaves at least one token, which overflows.
        assert_eq!(check_context(10, None, 16).unwrap(), 6);
        assert!(check_context(16, None, 16).is_err());
        // The largest max_tokens cannot wrap around, whatever the width of usize.
        assert!(check_context(usize::MAX - 1, Some(u32::MAX), usize::MAX).is_err());
        assert!(check_context(3, Some(u32::MAX), 4096).is_err());
        assert!(matches!(
            check_context(0, Some(1), 16),
            Err(LlmError::EmptyPrompt)
        ));
    }
}
