//! One sequence's generation, one token at a time: sampling from the logits, stop tokens and stop
//! strings, UTF-8-safe incremental text and the `max_tokens` limit. The single-sequence [`crate::Engine`]
//! and the batching [`crate::batch`] engine drive the same state, so both answer alike.

use std::collections::BTreeSet;
use std::time::Instant;

use artifacts_contract::SamplingDefaults;

use crate::error::Result;
use crate::files::ModelMeta;
use crate::params::{FinishReason, GenerationParams, TokenEvent, check_context};
use crate::sampler::{Sampler, SamplingSettings};
use crate::stream::{IncrementalDecoder, StopFilter, StopStep};
use crate::tokenizer::TextTokenizer;

/// The state of one sequence's output.
pub(crate) struct Generation {
    sampler: Sampler,
    decoder: IncrementalDecoder,
    stops: StopFilter,
    stop_ids: BTreeSet<u32>,
    max_tokens: usize,
    /// Every sampled token.
    pub(crate) generated: Vec<u32>,
    /// All text emitted so far.
    pub(crate) text: String,
    /// When the first token was sampled.
    pub(crate) first_token_at: Option<Instant>,
}

impl Generation {
    /// Checks the request against the context (`max_tokens` included) and sets the sampler up.
    pub(crate) fn new(
        prompt: &[u32],
        params: &GenerationParams,
        settings: SamplingSettings,
        meta: &ModelMeta,
    ) -> Result<Self> {
        params.validate()?;
        let max_tokens = check_context(prompt.len(), params.max_tokens, meta.context_length)?;
        let eos = (!params.ignore_eos).then_some(&meta.eos_token_ids);
        let stop_ids = eos
            .into_iter()
            .flatten()
            .chain(&params.stop_token_ids)
            .copied()
            .collect();
        let seed = params.seed.unwrap_or_else(random_seed);
        Ok(Generation {
            sampler: Sampler::new(settings, seed, prompt),
            decoder: IncrementalDecoder::default(),
            stops: StopFilter::new(&params.stop),
            stop_ids,
            max_tokens,
            generated: Vec::new(),
            text: String::new(),
            first_token_at: None,
        })
    }

    /// The most tokens this sequence generates.
    pub(crate) fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Samples the next token from `logits` and says what became of it: the event to stream and, when
    /// the sequence ends with it, why. The context length is never passed: `max_tokens` fits it.
    pub(crate) fn step(
        &mut self,
        logits: &mut [f32],
        tokenizer: &TextTokenizer,
    ) -> Result<(TokenEvent, Option<FinishReason>)> {
        let token = self.sampler.sample(logits);
        self.sampler.accept(token);
        self.generated.push(token);
        self.first_token_at.get_or_insert_with(Instant::now);
        let decode = |ids: &[u32]| tokenizer.decode(ids);
        let (piece, finish) = if self.stop_ids.contains(&token) {
            (self.flush(tokenizer)?, Some(FinishReason::Stop))
        } else {
            match self.stops.push(&self.decoder.push(token, decode)?) {
                StopStep::Stopped(before) => (before, Some(FinishReason::Stop)),
                StopStep::Emit(piece) if self.generated.len() >= self.max_tokens => {
                    (piece + &self.flush(tokenizer)?, Some(FinishReason::Length))
                }
                StopStep::Emit(piece) => (piece, None),
            }
        };
        self.text.push_str(&piece);
        let event = TokenEvent {
            token_id: token,
            text: piece,
            generated_tokens: self.generated.len(),
        };
        Ok((event, finish))
    }

    /// Text still held by the decoder and the stop filter at the end of a generation.
    fn flush(&mut self, tokenizer: &TextTokenizer) -> Result<String> {
        let rest = self.decoder.finish(|ids| tokenizer.decode(ids))?;
        Ok(match self.stops.push(&rest) {
            StopStep::Stopped(before) => before,
            StopStep::Emit(piece) => piece + &self.stops.finish(),
        })
    }
}

/// Request values over the model's generation_config over OpenAI's defaults.
pub(crate) fn sampling_settings(d: &SamplingDefaults, p: &GenerationParams) -> SamplingSettings {
    let greedy_default = (d.do_sample == Some(false)).then_some(0.0);
    SamplingSettings {
        temperature: p.temperature.or(greedy_default).or(d.temperature).unwrap_or(1.0),
        top_p: p.top_p.or(d.top_p).unwrap_or(1.0),
        top_k: p.top_k.or(d.top_k.map(|k| k as usize)).unwrap_or(0),
        min_p: p.min_p.or(d.min_p).unwrap_or(0.0),
        repetition_penalty: p
            .repetition_penalty
            .or(d.repetition_penalty.map(|r| r as f32))
            .unwrap_or(1.0),
        frequency_penalty: p.frequency_penalty,
        presence_penalty: p.presence_penalty,
    }
}

/// A seed for requests that give none: the clock's nanoseconds mixed with a counter.
fn random_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
