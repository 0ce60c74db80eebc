//! The engine: one loaded model with its tokenizer, chat template and device, running one request at a
//! time and streaming its tokens to a callback that may stop it between tokens.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use artifacts_contract::SamplingDefaults;
use candle_core::{DType, Device};

use crate::chat::{ChatMessage, ChatTemplate};
use crate::device::default_dtype;
use crate::error::{LlmError, Result};
use crate::files::{ModelFiles, ModelMeta, open_gguf, read_json_as};
use crate::generation::{Generation, sampling_settings};
use crate::models::{self, CausalLm, Kernels, LoadedModel};
use crate::params::{Completion, FinishReason, GenerationParams, Prompt, Timings, TokenEvent, Usage};
use crate::sampler::SamplingSettings;
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
        Self::load_with(files, device, dtype, Kernels::Auto)
    }

    /// Loads on the given kernels (tests run the GPUs' path, Candle's ops, on the CPU).
    pub fn load_with(files: &ModelFiles, device: &Device, dtype: DType, kernels: Kernels) -> Result<Self> {
        let (model, bundle, defaults) = load_parts(files, device, dtype, kernels)?;
        Ok(Engine {
            model: model.into_serial(),
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
        let mut generation = Generation::new(prompt, params, self.settings(params), self.meta())?;
        self.model.reset()?;
        let mut logits = self.model.forward(prompt, 0)?;
        let prefill_s = start.elapsed().as_secs_f64();
        let finish_reason = loop {
            let (event, finish) = generation.step(&mut logits, &self.tokenizer)?;
            let token = event.token_id;
            if on_token(event).is_break() {
                break finish.unwrap_or(FinishReason::Cancelled);
            }
            if let Some(reason) = finish {
                break reason;
            }
            let position = prompt.len() + generation.generated.len() - 1;
            logits = self.model.forward(&[token], position)?;
        };
        let end = Instant::now();
        let first = generation.first_token_at.unwrap_or(end);
        Ok(Completion {
            usage: Usage {
                prompt_tokens: prompt.len(),
                completion_tokens: generation.generated.len(),
            },
            text: generation.text,
            token_ids: generation.generated,
            finish_reason,
            timings: Timings {
                prefill_s,
                time_to_first_token_s: (first - start).as_secs_f64(),
                decode_s: (end - first).as_secs_f64(),
            },
        })
    }

    /// Request values over the model's generation_config over OpenAI's defaults.
    pub(crate) fn settings(&self, p: &GenerationParams) -> SamplingSettings {
        sampling_settings(&self.defaults, p)
    }
}

/// Loads a model, its tokenizer and chat template, and its sampling defaults (generation_config.json).
pub(crate) fn load_parts(
    files: &ModelFiles,
    device: &Device,
    dtype: DType,
    kernels: Kernels,
) -> Result<(LoadedModel, TokenizerBundle, SamplingDefaults)> {
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
    let model = models::load_with(files, meta, device, dtype, kernels)?;
    Ok((model, bundle, defaults))
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
