//! The engine: one loaded model with its tokenizer, chat template and device, running one request at a
//! time and streaming its tokens to a callback that may stop it between tokens.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use artifacts_contract::SamplingDefaults;
use candle_core::{DType, Device};

use crate::chat::{ChatMessage, ChatTemplate};
use crate::device::default_dtype;
use crate::error::{LlmError, Result};
use crate::files::{ModelFiles, ModelMeta, open_gguf, read_json_as};
use crate::models::{self, CausalLm};
use crate::params::{Completion, FinishReason, GenerationParams, Prompt, Timings, TokenEvent, Usage};
use crate::sampler::{Sampler, SamplingSettings};
use crate::stream::{IncrementalDecoder, StopFilter, StopStep};
use crate::tokenizer::{TextTokenizer, TokenizerBundle};

/// A loaded model ready to generate; the HTTP server holds one per worker.
pub struct Engine {
    model: Box<dyn CausalLm>,
    tokenizer: TextTokenizer,
    chat_template: Option<ChatTemplate>,
    defaults: SamplingDefaults,
    device: Device,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("meta", self.model.meta())
            .field("device", &self.device)
            .finish()
    }
}

impl Engine {
    /// Loads a `.gguf` file, a `.safetensors` file or a model folder (for development; the catalog
    /// path goes through [`Engine::load`]).
    pub fn load_path(path: &Path, device: &Device) -> Result<Self> {
        Self::load(&ModelFiles::discover(path)?, device)
    }

    /// Loads the model the files hold; the architecture is read from them.
    pub fn load(files: &ModelFiles, device: &Device) -> Result<Self> {
        Self::load_with_dtype(files, device, default_dtype(device))
    }

    /// Loads with an explicit dtype for unquantized weights (reference tests compare in f32).
    pub fn load_with_dtype(files: &ModelFiles, device: &Device, dtype: DType) -> Result<Self> {
        let (meta, bundle) = match &files.gguf {
            Some(path) => {
                let (content, _) = open_gguf(path)?;
                (
                    ModelMeta::from_gguf(path, &content)?,
                    TokenizerBundle::load(files, Some(&content))?,
                )
            }
            None => (
                ModelMeta::from_configs(files)?,
                TokenizerBundle::load(files, None)?,
            ),
        };
        let defaults = match &files.generation_config {
            Some(p) => sampling_defaults(&read_json_as(p)?),
            None => SamplingDefaults::default(),
        };
        let model = models::load(files, meta, device, dtype)?;
        Ok(Engine {
            model,
            tokenizer: bundle.tokenizer,
            chat_template: bundle.chat_template,
            defaults,
            device: device.clone(),
        })
    }

    /// The model's architecture name, end-of-sequence ids, vocab size and context length.
    pub fn meta(&self) -> &ModelMeta {
        self.model.meta()
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The tokenizer, for token counts and detokenization outside a generation.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Whether chat messages can be sent (the model has a chat template).
    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// The model itself, for tests that compare logits with a reference.
    pub fn model_mut(&mut self) -> &mut dyn CausalLm {
        self.model.as_mut()
    }

    /// The conversation rendered by the model's chat template, generation prompt included.
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String> {
        self.chat_template
            .as_ref()
            .ok_or(LlmError::NoChatTemplate)?
            .render(messages, true)
    }

    /// The token ids a prompt becomes (what `usage.prompt_tokens` counts).
    pub fn tokenize(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        match prompt {
            Prompt::Text(text) => self.tokenizer.encode(text, true),
            Prompt::Chat(messages) => self.tokenizer.encode_chat(&self.render_chat(messages)?, messages),
        }
    }

    /// Runs one request, calling `on_token` after every sampled token; returning `Break` stops the
    /// generation there (finish reason `cancelled`).
    pub fn generate(
        &mut self,
        prompt: &Prompt,
        params: &GenerationParams,
        on_token: impl FnMut(TokenEvent) -> ControlFlow<()>,
    ) -> Result<Completion> {
        let start = Instant::now();
        params.validate()?;
        let tokens = self.tokenize(prompt)?;
        self.generate_from_tokens(&tokens, params, start, on_token)
    }

    /// As [`Engine::generate`], from token ids already made (for callers that tokenize themselves).
    pub fn generate_tokens(
        &mut self,
        prompt: &[u32],
        params: &GenerationParams,
        on_token: impl FnMut(TokenEvent) -> ControlFlow<()>,
    ) -> Result<Completion> {
        params.validate()?;
        self.generate_from_tokens(prompt, params, Instant::now(), on_token)
    }

    fn generate_from_tokens(
        &mut self,
        prompt: &[u32],
        params: &GenerationParams,
        start: Instant,
        mut on_token: impl FnMut(TokenEvent) -> ControlFlow<()>,
    ) -> Result<Completion> {
        if prompt.is_empty() {
            return Err(LlmError::EmptyPrompt);
        }
        let context_length = self.meta().context_length;
        let max_tokens = self.check_context(prompt.len(), params.max_tokens)?;
        let eos = if params.ignore_eos {
            None
        } else {
            Some(&self.meta().eos_token_ids)
        };
        let stop_ids: BTreeSet<u32> = eos
            .into_iter()
            .flatten()
            .chain(&params.stop_token_ids)
            .copied()
            .collect();
        let seed = params.seed.unwrap_or_else(random_seed);
        let mut sampler = Sampler::new(self.settings(params), seed, prompt);
        let mut decoder = IncrementalDecoder::default();
        let mut stops = StopFilter::new(&params.stop);

        self.model.reset()?;
        let mut logits = self.model.forward(prompt, 0)?;
        let prefill_s = start.elapsed().as_secs_f64();
        let mut first_token_at = None;
        let mut generated: Vec<u32> = Vec::new();
        let mut text = String::new();
        let finish_reason = loop {
            let token = sampler.sample(&mut logits);
            sampler.accept(token);
            generated.push(token);
            first_token_at.get_or_insert_with(Instant::now);
            let (piece, finish) = if stop_ids.contains(&token) {
                (self.flush(&mut decoder, &mut stops)?, Some(FinishReason::Stop))
            } else {
                match stops.push(&decoder.push(token, |ids| self.tokenizer.decode(ids))?) {
                    StopStep::Stopped(before) => (before, Some(FinishReason::Stop)),
                    StopStep::Emit(piece) if generated.len() >= max_tokens => (
                        piece + &self.flush(&mut decoder, &mut stops)?,
                        Some(FinishReason::Length),
                    ),
                    StopStep::Emit(piece) => (piece, None),
                }
            };
            text.push_str(&piece);
            let event = TokenEvent {
                token_id: token,
                text: piece,
                generated_tokens: generated.len(),
            };
            if on_token(event).is_break() {
                break finish.unwrap_or(FinishReason::Cancelled);
            }
            if let Some(reason) = finish {
                break reason;
            }
            let position = prompt.len() + generated.len() - 1;
            debug_assert!(position < context_length);
            logits = self.model.forward(&[token], position)?;
        };
        let end = Instant::now();
        let first = first_token_at.unwrap_or(end);
        Ok(Completion {
            text,
            token_ids: generated.clone(),
            finish_reason,
            usage: Usage {
                prompt_tokens: prompt.len(),
                completion_tokens: generated.len(),
            },
            timings: Timings {
                prefill_s,
                time_to_first_token_s: (first - start).as_secs_f64(),
                decode_s: (end - first).as_secs_f64(),
            },
        })
    }

    /// The number of tokens to generate at most, or the context overflow error with both numbers.
    fn check_context(&self, prompt_tokens: usize, max_tokens: Option<usize>) -> Result<usize> {
        let context_length = self.meta().context_length;
        let requested = max_tokens.unwrap_or(context_length.saturating_sub(prompt_tokens).max(1));
        if prompt_tokens + requested > context_length {
            return Err(LlmError::ContextOverflow {
                prompt_tokens,
                requested_tokens: requested,
                context_length,
            });
        }
        Ok(requested)
    }

    /// Text still held by the decoder and the stop filter at the end of a generation.
    fn flush(&self, decoder: &mut IncrementalDecoder, stops: &mut StopFilter) -> Result<String> {
        let rest = decoder.finish(|ids| self.tokenizer.decode(ids))?;
        Ok(match stops.push(&rest) {
            StopStep::Stopped(before) => before,
            StopStep::Emit(piece) => piece + &stops.finish(),
        })
    }

    /// Request values over the model's generation_config over OpenAI's defaults.
    fn settings(&self, p: &GenerationParams) -> SamplingSettings {
        let d = &self.defaults;
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
}

/// The sampling fields of a `generation_config.json`.
fn sampling_defaults(v: &serde_json::Value) -> SamplingDefaults {
    let f = |k: &str| v.get(k).and_then(|x| x.as_f64());
    SamplingDefaults {
        do_sample: v.get("do_sample").and_then(|x| x.as_bool()),
        temperature: f("temperature"),
        top_p: f("top_p"),
        top_k: v.get("top_k").and_then(|x| x.as_u64()).map(|k| k as u32),
        min_p: f("min_p"),
        repetition_penalty: f("repetition_penalty"),
        max_new_tokens: v.get("max_new_tokens").and_then(|x| x.as_u64()).map(|k| k as u32),
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
