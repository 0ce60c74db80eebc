//! The text worker's [`Backend`]: one [`Engine`] behind a lock, running one job at a time, each token
//! streamed as an output; and a second copy of the tokenizer and chat template so prompts are counted
//! (for `/tokenize` and the context check) without waiting for the engine.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::Device;
use serde::Serialize;
use worker_runtime::{Backend, Counts, Finish, JobContext, MemoryUsage, StopReason, WorkerError};

use crate::Engine;
use crate::error::LlmError;
use crate::files::{ModelFiles, open_gguf};
use crate::params::{FinishReason, GenerationParams, Prompt};
use crate::tokenizer::TokenizerBundle;

/// One generated token as the native stream sends it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenOutput {
    /// Text that became final with this token (often empty: see [`crate::TokenEvent::text`]).
    pub text: String,
    /// The token id.
    pub token_id: u32,
}

/// One admitted generation: the prompt already tokenized and checked against the context.
#[derive(Debug)]
pub struct LlmJob {
    /// Prompt token ids.
    pub tokens: Vec<u32>,
    /// Sampling and stopping.
    pub params: GenerationParams,
}

/// Tokenizes prompts exactly as the engine does, outside the engine's lock.
pub struct PromptEncoder {
    bundle: TokenizerBundle,
    context_length: usize,
}

impl PromptEncoder {
    /// The token ids of a prompt (chat messages rendered with the model's template first).
    pub fn encode(&self, prompt: &Prompt) -> Result<Vec<u32>, LlmError> {
        match prompt {
            Prompt::Text(text) => self.bundle.tokenizer.encode(text, true),
            Prompt::Chat(messages) => {
                let template = self
                    .bundle
                    .chat_template
                    .as_ref()
                    .ok_or(LlmError::NoChatTemplate)?;
                self.bundle
                    .tokenizer
                    .encode_chat(&template.render(messages, true)?, messages)
            }
        }
    }

    /// The model's context window, in tokens.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// The engine's rule: the prompt plus `max_tokens` (when absent, the rest of the context, at least
    /// one token) must fit the context; refusing here answers 400 before the job queues.
    pub fn check_context(&self, prompt_tokens: usize, max_tokens: Option<usize>) -> Result<(), LlmError> {
        if prompt_tokens == 0 {
            return Err(LlmError::EmptyPrompt);
        }
        let context_length = self.context_length;
        let requested = max_tokens.unwrap_or(context_length.saturating_sub(prompt_tokens).max(1));
        if prompt_tokens + requested > context_length {
            return Err(LlmError::ContextOverflow {
                prompt_tokens,
                requested_tokens: requested,
                context_length,
            });
        }
        Ok(())
    }
}

/// A loaded model serving jobs; cheap to clone (the benchmark keeps a handle beside the server's).
#[derive(Clone)]
pub struct LlmBackend {
    engine: Arc<Mutex<Engine>>,
    prompts: Arc<PromptEncoder>,
    memory: MemoryUsage,
}

impl LlmBackend {
    /// Loads the model's engine on `device`, and its tokenizer a second time for the prompt encoder.
    pub fn load(files: &ModelFiles, device: &Device) -> Result<Self, LlmError> {
        let engine = Engine::load(files, device)?;
        let gguf = files.gguf.as_deref().map(open_gguf).transpose()?;
        let bundle = TokenizerBundle::load(files, gguf.as_ref().map(|(content, _)| content))?;
        let context_length = engine.meta().context_length;
        let weights_bytes = files
            .gguf
            .iter()
            .chain(&files.safetensors)
            .filter_map(|path| std::fs::metadata(path).ok())
            .map(|metadata| metadata.len())
            .sum();
        Ok(LlmBackend {
            engine: Arc::new(Mutex::new(engine)),
            prompts: Arc::new(PromptEncoder {
                bundle,
                context_length,
            }),
            memory: MemoryUsage {
                weights_bytes,
                other_bytes: 0,
            },
        })
    }

    /// The prompt encoder.
    pub fn prompts(&self) -> &PromptEncoder {
        &self.prompts
    }

    /// Runs `f` with the engine, waiting for a running job to finish (the benchmark's in-process side).
    pub fn with_engine<T>(&self, f: impl FnOnce(&mut Engine) -> T) -> T {
        // A job that panicked left the lock poisoned; the engine resets its cache at every request.
        f(&mut self.engine.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Backend for LlmBackend {
    type Job = LlmJob;
    type Output = TokenOutput;

    fn run(&self, job: LlmJob, ctx: &mut JobContext<TokenOutput>) -> Result<Finish, WorkerError> {
        let completion = self.with_engine(|engine| {
            engine.generate_tokens(&job.tokens, &job.params, |event| {
                match ctx.emit(TokenOutput {
                    text: event.text,
                    token_id: event.token_id,
                }) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(()),
                }
            })
        });
        let completion = completion.map_err(|err| super::errors::to_worker_error(err, "prompt"))?;
        let stop_reason = match completion.finish_reason {
            FinishReason::Stop => StopReason::Complete,
            FinishReason::Length => StopReason::Length,
            FinishReason::Cancelled => StopReason::Cancelled,
        };
        let usage = completion.usage;
        Ok(Finish {
            stop_reason,
            counts: Counts {
                input: usage.prompt_tokens as u64,
                output: usage.completion_tokens as u64,
            },
        })
    }

    fn memory(&self) -> MemoryUsage {
        self.memory
    }
}
