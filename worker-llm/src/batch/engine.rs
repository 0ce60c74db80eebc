//! The batching engine: a step loop on its own thread that owns the model and the KV cache, and the
//! handle the server submits requests through.
//!
//! Every step it drops finished and cancelled sequences (their blocks go back to the pool), admits
//! waiting requests first come, first served while the batch has room and the pool has blocks for their
//! prompt, and runs one forward pass over decode tokens of running sequences plus chunks of prompts
//! being prefilled, within a per-step token budget (chunked prefill: a long prompt never stalls the
//! others' next token). When a running sequence needs a block and none is free, the newest running
//! sequence is put back in line (its blocks released, recomputed later from the prefix cache), so a
//! running sequence is never corrupted and the cache never grows past its budget.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use artifacts_contract::SamplingDefaults;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_util::sync::CancellationToken;

use super::LoadedModel;
use super::kv_cache::{BLOCK_TOKENS, KvPool, bytes_per_token};
use super::scheduler::Scheduler;
use crate::error::{LlmError, Result};
use crate::files::ModelMeta;
use crate::params::{FinishReason, GenerationParams, TokenEvent};
use crate::tokenizer::TextTokenizer;

/// How the engine is sized.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Sequences in the running batch at most (`--concurrency`).
    pub max_sequences: usize,
    /// Bytes of the KV cache pool (`--kv-cache-mib`).
    pub kv_cache_bytes: usize,
    /// Tokens one step runs at most, decode tokens and prompt chunks together.
    pub step_tokens: usize,
    /// Whether full blocks are kept and reused across sequences.
    pub prefix_reuse: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_sequences: 8,
            kv_cache_bytes: 512 << 20,
            step_tokens: 256,
            prefix_reuse: true,
        }
    }
}

/// What a request's sequences report, in order; a sample's last token says why it ended.
#[derive(Debug)]
pub enum SeqEvent {
    /// A sampled token of sample `index`.
    Token {
        /// Which of the request's `n` samples.
        index: usize,
        /// The token and the text it made final.
        event: TokenEvent,
        /// Set on the sample's last token.
        finish: Option<FinishReason>,
    },
    /// The request failed; no more events follow.
    Failed(LlmError),
}

/// One request as the engine takes it.
pub struct Request {
    /// Prompt token ids.
    pub tokens: Vec<u32>,
    /// Sampling and stopping.
    pub params: GenerationParams,
    /// Samples to draw from the prompt (OpenAI's `n`); they share the prompt's cache blocks.
    pub n: usize,
    /// Cancelled when the request should stop (its client left, the server shuts down).
    pub cancel: CancellationToken,
}

/// Where a request's events go and how the engine learns it was abandoned.
pub(crate) struct Reply {
    pub(crate) events: UnboundedSender<SeqEvent>,
    pub(crate) cancel: CancellationToken,
}

impl Reply {
    pub(crate) fn abandoned(&self) -> bool {
        self.cancel.is_cancelled() || self.events.is_closed()
    }

    pub(crate) fn send(&self, event: SeqEvent) {
        // A receiver gone is seen by `abandoned` at the next step.
        let _ = self.events.send(event);
    }
}

/// Figures the server reports on `/metrics`, updated every step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineStats {
    /// Requests with a sequence in the running batch.
    pub running: usize,
    /// Requests handed to the engine and waiting for room in the batch or the cache.
    pub waiting: usize,
    /// Share of the cache's blocks held by sequences.
    pub kv_cache_usage: f64,
    /// Prompt tokens found in the prefix cache, since the start.
    pub prefix_hit_tokens: u64,
    /// Prompt tokens looked up in the prefix cache, since the start.
    pub prefix_query_tokens: u64,
    /// Forward steps run, since the start.
    pub steps: u64,
}

pub(crate) type SharedStats = Arc<Mutex<EngineStats>>;

/// The handle on the engine thread; dropping every clone stops the thread after its running work.
#[derive(Clone)]
pub struct BatchEngine {
    commands: Sender<(Request, Reply)>,
    stats: SharedStats,
    meta: ModelMeta,
    capacity_tokens: usize,
    cache_bytes: usize,
}

impl std::fmt::Debug for BatchEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchEngine")
            .field("meta", &self.meta)
            .field("capacity_tokens", &self.capacity_tokens)
            .finish()
    }
}

impl BatchEngine {
    /// Starts the engine thread with `model`, its cache pool sized by `config`.
    pub fn start(
        model: LoadedModel,
        tokenizer: TextTokenizer,
        defaults: SamplingDefaults,
        config: EngineConfig,
    ) -> Self {
        let meta = model.meta().clone();
        let model = model.into_batched();
        let (layers, kv_width) = model.cache_shape();
        let per_block = BLOCK_TOKENS * bytes_per_token(layers, kv_width).max(1);
        let blocks = (config.kv_cache_bytes / per_block).max(1);
        let pool = KvPool::new(layers, kv_width, blocks);
        let capacity_tokens = pool.capacity() * BLOCK_TOKENS;
        let cache_bytes = pool.bytes();
        let stats = SharedStats::default();
        let (commands, inbox) = mpsc::channel();
        let scheduler = Scheduler::new(model, pool, tokenizer, defaults, config, stats.clone());
        std::thread::Builder::new()
            .name("llm-engine".into())
            .spawn(move || run(scheduler, inbox))
            .expect("spawning the engine thread");
        BatchEngine {
            commands,
            stats,
            meta,
            capacity_tokens,
            cache_bytes,
        }
    }

    /// Hands a request to the engine; its events arrive on the returned receiver.
    pub fn submit(&self, request: Request) -> UnboundedReceiver<SeqEvent> {
        let (events, receiver) = unbounded_channel();
        let reply = Reply {
            events,
            cancel: request.cancel.clone(),
        };
        if let Err(mpsc::SendError((_, reply))) = self.commands.send((request, reply)) {
            reply.send(SeqEvent::Failed(LlmError::Internal(
                "the engine thread has stopped".into(),
            )));
        }
        receiver
    }

    /// The latest figures.
    pub fn stats(&self) -> EngineStats {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The model's architecture name, end-of-sequence ids, vocab size and context length.
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// Positions the KV cache holds in all (one sequence's context for a model with its own cache).
    pub fn capacity_tokens(&self) -> usize {
        self.capacity_tokens
    }

    /// Bytes of the KV cache pool (0 for a model with its own cache).
    pub fn cache_bytes(&self) -> usize {
        self.cache_bytes
    }
}

/// The step loop: waits for work when idle, else runs steps and takes new requests between them.
fn run(mut scheduler: Scheduler, inbox: Receiver<(Request, Reply)>) {
    loop {
        if scheduler.is_idle() {
            match inbox.recv() {
                Ok((request, reply)) => scheduler.add(request, reply),
                Err(_) => return,
            }
        }
        loop {
            match inbox.try_recv() {
                Ok((request, reply)) => scheduler.add(request, reply),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) if scheduler.is_idle() => return,
                Err(mpsc::TryRecvError::Disconnected) => break,
            }
        }
        if !scheduler.step() {
            // Nothing could run (every sequence waits for cache blocks held by no one that can
            // finish): wait a little for a request or a cancellation instead of spinning.
            match inbox.recv_timeout(Duration::from_millis(5)) {
                Ok((request, reply)) => scheduler.add(request, reply),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) if scheduler.is_idle() => return,
                Err(RecvTimeoutError::Disconnected) => {}
            }
        }
    }
}

/// Runs a request to its end on the calling thread (for callers outside an async runtime), calling
/// `on_event` for every event; returns the finish reason of each sample.
pub fn generate_blocking(
    engine: &BatchEngine,
    request: Request,
    mut on_event: impl FnMut(&SeqEvent),
) -> Result<Vec<FinishReason>> {
    let n = request.n;
    let mut receiver = engine.submit(request);
    let mut reasons = vec![None; n];
    while let Some(event) = receiver.blocking_recv() {
        on_event(&event);
        match event {
            SeqEvent::Token {
                index,
                finish: Some(reason),
                ..
            } => {
                reasons[index] = Some(reason);
                if reasons.iter().all(Option::is_some) {
                    break;
                }
            }
            SeqEvent::Failed(err) => return Err(err),
            SeqEvent::Token { .. } => {}
        }
    }
    reasons
        .into_iter()
        .map(|r| r.ok_or_else(|| LlmError::Internal("the engine dropped a request".into())))
        .collect()
}
