//! Many sequences in one forward pass: the model seam for batching ([`BatchLm`]), the engine's paged KV
//! cache ([`kv_cache`]), and the engine that schedules sequences step by step ([`engine`]).
//!
//! A [`BatchLm`] runs one step over chunks of several sequences at once (decode tokens and pieces of
//! prompts), reading and writing keys and values in the engine's block pool through each sequence's
//! block table; every architecture runs this way ([`crate::models`]). [`OneSequence`] gives a batching
//! model the single-sequence signature ([`CausalLm`]) the [`crate::Engine`] and the reference tests use.

pub mod engine;
pub mod kv_cache;
mod scheduler;

use crate::error::{LlmError, Result};
use crate::files::ModelMeta;
use crate::models::CausalLm;
use kv_cache::{BLOCK_TOKENS, BlockTable, KvPool};

/// One sequence's part of a step.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    /// Tokens to run, at positions `start..start + tokens.len()`.
    pub tokens: &'a [u32],
    /// Position of `tokens[0]`; the cache holds the sequence's positions before it.
    pub start: usize,
    /// The sequence's block table, covering every position up to the chunk's last.
    pub blocks: &'a [usize],
    /// Whether the logits of the chunk's last position are wanted (the chunk ends the known tokens).
    pub logits: bool,
}

/// A model that runs chunks of many sequences in one step over the engine's paged cache.
pub trait BatchLm: Send {
    /// Runs every chunk (writing their keys and values into `cache`) and returns, in order, the logits
    /// (f32, vocabulary long) of the last position of each chunk that asks for them.
    fn forward_batch(&mut self, chunks: &[Chunk], cache: &mut KvPool) -> Result<Vec<Vec<f32>>>;
    /// Layers, and key (= value) values per position and layer: the shape of the cache it needs.
    fn cache_shape(&self) -> (usize, usize);
    /// End-of-sequence ids, vocab size, context length.
    fn meta(&self) -> &ModelMeta;
}

/// A loaded model, batching over the engine's cache.
pub struct LoadedModel(pub(crate) Box<dyn BatchLm>);

impl LoadedModel {
    /// The model behind the single-sequence signature, with a pool of its own.
    pub fn into_serial(self) -> Box<dyn CausalLm> {
        Box::new(OneSequence::new(self.0))
    }

    /// The model, for the engine's step loop.
    pub fn into_batched(self) -> Box<dyn BatchLm> {
        self.0
    }

    /// End-of-sequence ids, vocab size, context length.
    pub fn meta(&self) -> &ModelMeta {
        self.0.meta()
    }
}

/// A batching model running one sequence in a pool of its own, grown as the sequence grows.
pub struct OneSequence {
    model: Box<dyn BatchLm>,
    pool: KvPool,
    table: BlockTable,
    cached: usize,
}

impl OneSequence {
    /// Wraps `model` with a pool as long as its context (memory is committed as blocks are written).
    pub fn new(model: Box<dyn BatchLm>) -> Self {
        let (layers, kv_width) = model.cache_shape();
        let blocks = model.meta().context_length.div_ceil(BLOCK_TOKENS).max(1);
        OneSequence {
            pool: KvPool::new(layers, kv_width, blocks),
            model,
            table: BlockTable::default(),
            cached: 0,
        }
    }
}

impl CausalLm for OneSequence {
    fn forward(&mut self, tokens: &[u32], position: usize) -> Result<Vec<f32>> {
        if position > self.cached {
            return Err(LlmError::Internal(format!(
                "position {position} is past the {} cached positions",
                self.cached
            )));
        }
        if tokens.is_empty() {
            return Err(LlmError::EmptyPrompt);
        }
        let end = position + tokens.len();
        if !self.pool.grow(&mut self.table, end) {
            return Err(LlmError::Internal(format!(
                "{end} positions do not fit the context of {}",
                self.model.meta().context_length
            )));
        }
        let chunk = Chunk {
            tokens,
            start: position,
            blocks: &self.table.blocks,
            logits: true,
        };
        let logits = self.model.forward_batch(&[chunk], &mut self.pool)?.pop();
        self.cached = end;
        logits.ok_or_else(|| LlmError::Internal("the model returned no logits".into()))
    }

    fn reset(&mut self) -> Result<()> {
        self.cached = 0;
        Ok(())
    }

    fn meta(&self) -> &ModelMeta {
        self.model.meta()
    }
}
