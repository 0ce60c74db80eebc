//! The engine thread's state: the waiting line, the running batch, and one step of the loop (see
//! [`super::engine`] for the policy).
//!
//! A sequence is its tokens (prompt, then what it generated) and how many of them have keys and values
//! in the cache (`computed`). A step runs, for each scheduled sequence, its tokens from `computed` on
//! (all of them but a budget's worth for a prompt, one for a decoding sequence); when that reaches the
//! last known token the logits come back and a token is sampled. Prefill, chunked prefill, decode, the
//! reuse of a cached prefix and the recomputation of a preempted sequence are all that one rule.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, PoisonError};

use artifacts_contract::SamplingDefaults;

use super::engine::{EngineConfig, Reply, Request, SeqEvent, SharedStats};
use super::kv_cache::{BLOCK_TOKENS, BlockTable, KvPool};
use super::{BatchLm, Chunk};
use crate::error::{LlmError, Result};
use crate::files::ModelMeta;
use crate::generation::{Generation, sampling_settings};
use crate::tokenizer::TextTokenizer;

/// One sample of one request.
struct Sequence {
    /// Arrival order of its request (samples of one request share it).
    id: u64,
    /// Which of the request's samples.
    index: usize,
    reply: Arc<Reply>,
    tokens: Vec<u32>,
    computed: usize,
    table: BlockTable,
    generation: Generation,
    /// The request's other samples, started once this one's prompt is in the cache (they find it
    /// there as a shared prefix).
    forks: Vec<(usize, Generation)>,
}

impl Sequence {
    fn order(&self) -> (u64, usize) {
        (self.id, self.index)
    }
}

pub(crate) struct Scheduler {
    /// Runs many sequences per step over `pool`.
    model: Box<dyn BatchLm>,
    pool: KvPool,
    tokenizer: TextTokenizer,
    defaults: SamplingDefaults,
    config: EngineConfig,
    meta: ModelMeta,
    stats: SharedStats,
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    next_id: u64,
    prefix_hits: u64,
    prefix_queries: u64,
    steps: u64,
}

impl Scheduler {
    pub(crate) fn new(
        model: Box<dyn BatchLm>,
        pool: KvPool,
        tokenizer: TextTokenizer,
        defaults: SamplingDefaults,
        config: EngineConfig,
        stats: SharedStats,
    ) -> Self {
        let meta = model.meta().clone();
        Scheduler {
            model,
            pool,
            tokenizer,
            defaults,
            config,
            meta,
            stats,
            waiting: VecDeque::new(),
            running: Vec::new(),
            next_id: 0,
            prefix_hits: 0,
            prefix_queries: 0,
            steps: 0,
        }
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Queues a request, or answers its error at once.
    pub(crate) fn add(&mut self, request: Request, reply: Reply) {
        match self.sequences(request, reply) {
            Ok(seq) => self.waiting.push_back(seq),
            Err(refused) => {
                let (err, reply) = *refused;
                reply.send(SeqEvent::Failed(err))
            }
        }
        self.publish();
    }

    /// The sequence of a request, or the error with the reply channel that must hear it (boxed: the pair is
    /// large and this is the rare path).
    fn sequences(&mut self, request: Request, reply: Reply) -> Result<Sequence, Box<(LlmError, Reply)>> {
        let n = request.n.max(1);
        let mut generations = Vec::with_capacity(n);
        for index in 0..n {
            let mut params = request.params.clone();
            params.seed = params.seed.map(|seed| seed.wrapping_add(index as u64));
            let settings = sampling_settings(&self.defaults, &params);
            match Generation::new(&request.tokens, &params, settings, &self.meta) {
                Ok(g) => generations.push((index, g)),
                Err(err) => return Err(Box::new((err, reply))),
            }
        }
        {
            let needed = request.tokens.len() + generations[0].1.max_tokens();
            let capacity = self.pool.capacity() * BLOCK_TOKENS;
            if needed > capacity {
                return Err(Box::new((
                    LlmError::KvCacheTooSmall {
                        needed_tokens: needed,
                        capacity_tokens: capacity,
                    },
                    reply,
                )));
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let (index, generation) = generations.remove(0);
        Ok(Sequence {
            id,
            index,
            reply: Arc::new(reply),
            tokens: request.tokens,
            computed: 0,
            table: BlockTable::default(),
            generation,
            forks: generations,
        })
    }

    /// One step: drop what ended, admit, run one forward pass. `false` when nothing could run.
    pub(crate) fn step(&mut self) -> bool {
        self.drop_abandoned();
        self.admit();
        let plan = self.plan();
        if plan.is_empty() {
            self.publish();
            return false;
        }
        if let Err(err) = self.run(&plan) {
            tracing::error!(error = %err, "a forward step failed; failing its sequences");
            let failed: Vec<usize> = plan.iter().map(|&(i, _)| i).collect();
            for i in failed.into_iter().rev() {
                let mut seq = self.running.remove(i);
                self.release(&mut seq);
                seq.reply
                    .send(SeqEvent::Failed(LlmError::Internal(err.to_string())));
            }
        }
        self.steps += 1;
        self.publish();
        true
    }

    fn drop_abandoned(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].reply.abandoned() {
                let mut seq = self.running.remove(i);
                self.release(&mut seq);
            } else {
                i += 1;
            }
        }
        self.waiting.retain(|seq| !seq.reply.abandoned());
    }

    /// Moves waiting sequences into the batch, oldest first, while it has room and the pool has blocks
    /// for their whole known tokens (plus one spare block per running sequence to decode into).
    fn admit(&mut self) {
        while self.running.len() < self.config.max_sequences.max(1) {
            let Some(mut seq) = self.waiting.pop_front() else {
                return;
            };
            {
                let pool = &mut self.pool;
                if self.config.prefix_reuse && seq.table.blocks.is_empty() {
                    // Keep the last token to compute: its logits are what the sequence needs.
                    let reusable = (seq.tokens.len() - 1) / BLOCK_TOKENS;
                    seq.computed = pool.reuse_prefix(&mut seq.table, &seq.tokens, reusable);
                }
                let needed = KvPool::blocks_needed(&seq.table, seq.tokens.len() + 1);
                let spare = if self.running.is_empty() {
                    0
                } else {
                    self.running.len()
                };
                if needed + spare > pool.free_blocks() {
                    pool.release(&mut seq.table);
                    seq.computed = 0;
                    self.waiting.push_front(seq);
                    return;
                }
                self.prefix_queries += seq.tokens.len() as u64;
                self.prefix_hits += seq.computed as u64;
            }
            self.running.push(seq);
        }
    }

    /// The tokens each running sequence runs this step (`(index in running, count)`), decoding
    /// sequences first, then prompt chunks, oldest first, within the step's budget; with the blocks they
    /// need taken from the pool (preempting the newest sequences when it runs dry).
    fn plan(&mut self) -> Vec<(usize, usize)> {
        let mut budget = self.config.step_tokens.max(1);
        let mut takes = vec![0usize; self.running.len()];
        for decode_pass in [true, false] {
            for (i, seq) in self.running.iter().enumerate() {
                let remaining = seq.tokens.len() - seq.computed;
                if (remaining == 1) == decode_pass && budget > 0 {
                    takes[i] = remaining.min(budget);
                    budget -= takes[i];
                }
            }
        }
        let mut i = 0;
        while i < self.running.len() {
            let positions = self.running[i].computed + takes[i];
            if takes[i] > 0 && !self.grow(i, positions) {
                // Put the newest sequence back in line (possibly this one) and try again.
                let newest = self.running.len() - 1;
                self.preempt(newest);
                takes.pop();
                continue;
            }
            i += 1;
        }
        takes
            .into_iter()
            .enumerate()
            .filter(|&(_, take)| take > 0)
            .collect()
    }

    fn grow(&mut self, i: usize, positions: usize) -> bool {
        self.pool.grow(&mut self.running[i].table, positions)
    }

    fn preempt(&mut self, i: usize) {
        let mut seq = self.running.remove(i);
        self.release(&mut seq);
        seq.computed = 0;
        let at = self
            .waiting
            .iter()
            .position(|w| w.order() > seq.order())
            .unwrap_or(self.waiting.len());
        self.waiting.insert(at, seq);
    }

    fn release(&mut self, seq: &mut Sequence) {
        self.pool.release(&mut seq.table);
    }

    /// Runs the forward pass of `plan` and samples where logits came back.
    fn run(&mut self, plan: &[(usize, usize)]) -> Result<()> {
        let logits = {
            let chunks: Vec<Chunk> = plan
                .iter()
                .map(|&(i, take)| {
                    let seq = &self.running[i];
                    Chunk {
                        tokens: &seq.tokens[seq.computed..seq.computed + take],
                        start: seq.computed,
                        blocks: &seq.table.blocks,
                        logits: seq.computed + take == seq.tokens.len(),
                    }
                })
                .collect();
            self.model.forward_batch(&chunks, &mut self.pool)?
        };
        let mut logits = logits.into_iter();
        let mut finished = Vec::new();
        for &(i, take) in plan {
            let seq = &mut self.running[i];
            seq.computed += take;
            if self.config.prefix_reuse {
                self.pool
                    .register_full(&mut seq.table, &seq.tokens[..seq.computed]);
            }
            if seq.computed < seq.tokens.len() {
                continue;
            }
            let mut row = logits
                .next()
                .ok_or_else(|| LlmError::Internal("fewer logits than sequences asked".into()))?;
            if !seq.forks.is_empty() {
                // The prompt is in the cache now: the other samples start, finding it there.
                for (index, generation) in std::mem::take(&mut seq.forks) {
                    let fork = Sequence {
                        id: seq.id,
                        index,
                        reply: seq.reply.clone(),
                        tokens: seq.tokens.clone(),
                        computed: 0,
                        table: BlockTable::default(),
                        generation,
                        forks: Vec::new(),
                    };
                    let at = self
                        .waiting
                        .iter()
                        .position(|w| w.order() > fork.order())
                        .unwrap_or(self.waiting.len());
                    self.waiting.insert(at, fork);
                }
            }
            let (event, finish) = seq.generation.step(&mut row, &self.tokenizer)?;
            seq.tokens.push(event.token_id);
            seq.reply.send(SeqEvent::Token {
                index: seq.index,
                event,
                finish,
            });
            if finish.is_some() {
                finished.push(i);
            }
        }
        for i in finished.into_iter().rev() {
            let mut seq = self.running.remove(i);
            self.release(&mut seq);
        }
        Ok(())
    }

    fn publish(&self) {
        // Requests, not sequences: the samples of one request count once, as running if any runs.
        let running: BTreeSet<u64> = self.running.iter().map(|s| s.id).collect();
        let waiting: BTreeSet<u64> = self
            .waiting
            .iter()
            .map(|s| s.id)
            .filter(|id| !running.contains(id))
            .collect();
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats.running = running.len();
        stats.waiting = waiting.len();
        stats.kv_cache_usage = self.pool.usage();
        stats.prefix_hit_tokens = self.prefix_hits;
        stats.prefix_query_tokens = self.prefix_queries;
        stats.steps = self.steps;
    }
}
