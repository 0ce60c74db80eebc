//! The text worker's [`Backend`]: a [`BatchEngine`] running every admitted job's sequences together,
//! each job streaming the tokens its sequences get; and a copy of the tokenizer and chat template so
//! prompts are counted (for `/tokenize` and the context check) without going through the engine.

use std::sync::Arc;

use candle_core::Device;
use serde::Serialize;
use worker_runtime::{
    Backend, BackendLoad, Counts, Finish, JobContext, JobFuture, MemoryUsage, StopReason, WorkerError,
};

use crate::batch::engine::{BatchEngine, EngineConfig, Request, SeqEvent};
use crate::engine::load_parts;
use crate::error::LlmError;
use crate::files::ModelFiles;
use crate::params::{FinishReason, GenerationParams, Prompt, check_context};
use crate::tokenizer::TokenizerBundle;

/// One generated token as the native stream sends it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenOutput {
    /// Text that became final with this token (often empty: see [`crate::TokenEvent::text`]).
    pub text: String,
    /// The token id.
    pub token_id: u32,
    /// Which of the request's `n` samples it belongs to (absent for the first).
    #[serde(skip_serializing_if = "is_zero")]
    pub index: usize,
    /// On the last token of a sample: why it ended (`stop`, `length`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<&'static str>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One admitted generation: the prompt already tokenized and checked against the context.
#[derive(Debug)]
pub struct LlmJob {
    /// Prompt token ids.
    pub tokens: Vec<u32>,
    /// Sampling and stopping.
    pub params: GenerationParams,
    /// Samples to draw (OpenAI's `n`); they share the prompt's cache blocks.
    pub n: usize,
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

    /// The engine's rule ([`check_context`]); refusing here answers 400 before the job queues.
    pub fn check_context(&self, prompt_tokens: usize, max_tokens: Option<u32>) -> Result<(), LlmError> {
        check_context(prompt_tokens, max_tokens, self.context_length).map(|_| ())
    }
}

/// A loaded model serving jobs; cheap to clone (the benchmark keeps a handle beside the server's).
#[derive(Clone)]
pub struct LlmBackend {
    engine: BatchEngine,
    prompts: Arc<PromptEncoder>,
    memory: MemoryUsage,
}

impl LlmBackend {
    /// Loads the model on `device` with the engine's default sizes.
    pub fn load(files: &ModelFiles, device: &Device) -> Result<Self, LlmError> {
        Self::load_with(files, device, EngineConfig::default())
    }

    /// Loads the model on `device` and starts its engine sized by `config`.
    pub fn load_with(files: &ModelFiles, device: &Device, config: EngineConfig) -> Result<Self, LlmError> {
        Self::load_on(files, device, config, crate::models::Kernels::Auto)
    }

    /// Loads as [`LlmBackend::load_with`] does, on the given kernels (tests run the GPUs' path on the CPU).
    pub fn load_on(
        files: &ModelFiles,
        device: &Device,
        config: EngineConfig,
        kernels: crate::models::Kernels,
    ) -> Result<Self, LlmError> {
        let (model, bundle, defaults) = load_parts(files, device, crate::default_dtype(device), kernels)?;
        let context_length = model.meta().context_length;
        let engine = BatchEngine::start(model, bundle.tokenizer.clone(), defaults, config);
        let weights_bytes = files
            .gguf
            .iter()
            .chain(&files.safetensors)
            .filter_map(|path| std::fs::metadata(path).ok())
            .map(|metadata| metadata.len())
            .sum();
        Ok(LlmBackend {
            memory: MemoryUsage {
                weights_bytes,
                other_bytes: engine.cache_bytes() as u64,
            },
            engine,
            prompts: Arc::new(PromptEncoder {
                bundle,
                context_length,
            }),
        })
    }

    /// The prompt encoder.
    pub fn prompts(&self) -> &PromptEncoder {
        &self.prompts
    }

    /// The engine, for work outside the server's queue (the benchmark's in-process side).
    pub fn engine(&self) -> &BatchEngine {
        &self.engine
    }
}

impl Backend for LlmBackend {
    type Job = LlmJob;
    type Output = TokenOutput;

    fn start(self: Arc<Self>, job: LlmJob, mut ctx: JobContext<TokenOutput>) -> JobFuture<TokenOutput> {
        Box::pin(async move {
            let result = stream_job(&self.engine, job, &mut ctx).await;
            (result, ctx)
        })
    }

    fn memory(&self) -> MemoryUsage {
        self.memory
    }

    fn scheduler_load(&self) -> Option<BackendLoad> {
        let stats = self.engine.stats();
        Some(BackendLoad {
            running: stats.running as u64,
            waiting: stats.waiting as u64,
            kv_cache_usage_ratio: stats.kv_cache_usage,
            prefix_cache_hit_tokens: stats.prefix_hit_tokens,
            prefix_cache_query_tokens: stats.prefix_query_tokens,
        })
    }
}

/// Hands the job to the engine and streams its tokens until every sample has ended. Dropping the
/// receiver (a client gone) and the job's token (shutdown) both make the engine drop the sequences.
async fn stream_job(
    engine: &BatchEngine,
    job: LlmJob,
    ctx: &mut JobContext<TokenOutput>,
) -> Result<Finish, WorkerError> {
    let (n, input) = (job.n.max(1), job.tokens.len() as u64);
    let mut events = engine.submit(Request {
        tokens: job.tokens,
        params: job.params,
        n,
        cancel: ctx.cancellation(),
    });
    let mut reasons: Vec<Option<FinishReason>> = vec![None; n];
    let mut output = 0u64;
    while let Some(event) = events.recv().await {
        match event {
            SeqEvent::Token { index, event, finish } => {
                output += 1;
                ctx.emit(TokenOutput {
                    text: event.text,
                    token_id: event.token_id,
                    index,
                    finish_reason: finish.map(FinishReason::as_str),
                })?;
                if let Some(reason) = finish {
                    reasons[index] = Some(reason);
                    if reasons.iter().all(Option::is_some) {
                        let stop_reason = match reasons[0] {
                            Some(FinishReason::Length) => StopReason::Length,
                            Some(FinishReason::Cancelled) => StopReason::Cancelled,
                            _ => StopReason::Complete,
                        };
                        return Ok(Finish {
                            stop_reason,
                            counts: Counts { input, output },
                        });
                    }
                }
            }
            SeqEvent::Failed(err) => return Err(super::errors::to_worker_error(err, "prompt")),
        }
    }
    Err(WorkerError::Cancelled)
}
