//! The engine's KV cache: a pool of fixed-size blocks shared by every sequence (paged, as vLLM's
//! PagedAttention), stored in f16, with full blocks kept after their sequence ends and found again by
//! the tokens they hold (prefix reuse).
//!
//! A sequence owns a block table: block `i` holds the keys and values of its positions
//! `i * BLOCK_TOKENS .. (i + 1) * BLOCK_TOKENS` in every layer. A full block is registered under the
//! hash of its tokens chained with the hash of everything before it, so two sequences that share a
//! prefix (a system prompt, a resent chat history, `n > 1`) share its blocks. A block nobody holds but
//! that is registered stays valid until the pool needs it again, oldest first.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use half::f16;
use half::slice::HalfBitsSliceExt;

/// Positions per block.
pub const BLOCK_TOKENS: usize = 16;

/// Bytes of the cache per token for a model of `layers` layers and `kv_width` key (= value) values per
/// position and layer, in f16.
pub fn bytes_per_token(layers: usize, kv_width: usize) -> usize {
    layers * 2 * kv_width * std::mem::size_of::<f16>()
}

/// What one block is.
#[derive(Clone, Default)]
struct BlockInfo {
    /// Sequences holding it.
    refs: u32,
    /// The prefix hash it is registered under, when full and registered.
    hash: Option<u64>,
    /// Its tokens, to tell a hash collision from a hit.
    tokens: Vec<u32>,
    /// The hash of the block before it (0 for the first), likewise.
    parent: u64,
    /// Whether it is in the queue of blocks nobody holds.
    queued: bool,
}

/// The block pool; owned by the engine thread.
pub struct KvPool {
    layers: usize,
    kv_width: usize,
    /// Per layer: the bits of the f16 keys of every block, `BLOCK_TOKENS * kv_width` per block (zeroed
    /// integers, so the memory is committed only as blocks are first written).
    keys: Vec<Vec<u16>>,
    /// Per layer: values, laid out as the keys.
    values: Vec<Vec<u16>>,
    info: Vec<BlockInfo>,
    /// Blocks nobody holds, least recently released first (registered ones may still be reused).
    idle: VecDeque<usize>,
    /// Blocks nobody holds.
    free: usize,
    registered: HashMap<u64, usize>,
}

/// A sequence's handle on its blocks.
#[derive(Debug, Default, Clone)]
pub struct BlockTable {
    /// Block ids, in position order.
    pub blocks: Vec<usize>,
    /// Full blocks already registered for reuse (a prefix of `blocks`).
    registered: usize,
    /// The chained hash of the last registered block.
    last_hash: u64,
}

impl KvPool {
    /// A pool of `blocks` blocks for a model of `layers` layers and `kv_width` values per position.
    pub fn new(layers: usize, kv_width: usize, blocks: usize) -> Self {
        let per_layer = blocks * BLOCK_TOKENS * kv_width;
        KvPool {
            layers,
            kv_width,
            keys: (0..layers).map(|_| vec![0u16; per_layer]).collect(),
            values: (0..layers).map(|_| vec![0u16; per_layer]).collect(),
            info: vec![
                BlockInfo {
                    queued: true,
                    ..Default::default()
                };
                blocks
            ],
            idle: (0..blocks).collect(),
            free: blocks,
            registered: HashMap::new(),
        }
    }

    /// Blocks in the pool.
    pub fn capacity(&self) -> usize {
        self.info.len()
    }

    /// Blocks no sequence holds (some may still hold a reusable prefix).
    pub fn free_blocks(&self) -> usize {
        self.free
    }

    /// The share of blocks held by sequences, 0 to 1.
    pub fn usage(&self) -> f64 {
        match self.capacity() {
            0 => 0.0,
            n => (n - self.free) as f64 / n as f64,
        }
    }

    /// Bytes the pool holds.
    pub fn bytes(&self) -> usize {
        self.capacity() * BLOCK_TOKENS * bytes_per_token(self.layers, self.kv_width)
    }

    /// Values per position and layer (keys or values).
    pub fn kv_width(&self) -> usize {
        self.kv_width
    }

    /// Layer `layer`'s keys and values, for a model's forward pass.
    pub fn layer(&mut self, layer: usize) -> (&mut [f16], &mut [f16]) {
        (
            self.keys[layer].reinterpret_cast_mut(),
            self.values[layer].reinterpret_cast_mut(),
        )
    }

    /// Takes as many registered blocks as hold the start of `tokens` (at most `max_blocks`), into an
    /// empty table; returns the number of positions they cover.
    pub fn reuse_prefix(&mut self, table: &mut BlockTable, tokens: &[u32], max_blocks: usize) -> usize {
        debug_assert!(table.blocks.is_empty());
        for chunk in tokens.chunks_exact(BLOCK_TOKENS).take(max_blocks) {
            let hash = chain(table.last_hash, chunk);
            let Some(&block) = self.registered.get(&hash) else {
                break;
            };
            let info = &self.info[block];
            if info.tokens != chunk || info.parent != table.last_hash {
                break;
            }
            self.hold(block);
            table.blocks.push(block);
            table.registered += 1;
            table.last_hash = hash;
        }
        table.blocks.len() * BLOCK_TOKENS
    }

    /// Blocks needed to hold `positions` positions with `table`, beyond what it holds.
    pub fn blocks_needed(table: &BlockTable, positions: usize) -> usize {
        positions
            .div_ceil(BLOCK_TOKENS)
            .saturating_sub(table.blocks.len())
    }

    /// Grows `table` to hold `positions` positions; `false` (and nothing taken) when the pool lacks
    /// the blocks.
    pub fn grow(&mut self, table: &mut BlockTable, positions: usize) -> bool {
        let needed = Self::blocks_needed(table, positions);
        if needed > self.free {
            return false;
        }
        for _ in 0..needed {
            let block = self.take_idle();
            table.blocks.push(block);
        }
        true
    }

    /// Registers the full blocks of `table` whose positions hold `tokens` (the sequence's tokens, as
    /// far as their keys and values are computed).
    pub fn register_full(&mut self, table: &mut BlockTable, tokens: &[u32]) {
        let full = (tokens.len() / BLOCK_TOKENS).min(table.blocks.len());
        while table.registered < full {
            let i = table.registered;
            let chunk = &tokens[i * BLOCK_TOKENS..(i + 1) * BLOCK_TOKENS];
            let hash = chain(table.last_hash, chunk);
            let block = table.blocks[i];
            if !self.registered.contains_key(&hash) && self.info[block].hash.is_none() {
                self.registered.insert(hash, block);
                let info = &mut self.info[block];
                info.hash = Some(hash);
                info.tokens = chunk.to_vec();
                info.parent = table.last_hash;
            }
            table.registered += 1;
            table.last_hash = hash;
        }
    }

    /// Gives every block of `table` back (registered ones stay reusable until needed).
    pub fn release(&mut self, table: &mut BlockTable) {
        for block in table.blocks.drain(..) {
            let info = &mut self.info[block];
            info.refs -= 1;
            if info.refs == 0 {
                self.free += 1;
                if !info.queued {
                    info.queued = true;
                    self.idle.push_back(block);
                }
            }
        }
        *table = BlockTable::default();
    }

    fn hold(&mut self, block: usize) {
        let info = &mut self.info[block];
        if info.refs == 0 {
            self.free -= 1;
        }
        info.refs += 1;
    }

    /// The least recently released block nobody holds, unregistered and held once.
    fn take_idle(&mut self) -> usize {
        loop {
            let block = self.idle.pop_front().expect("free > 0 means an idle block");
            let info = &mut self.info[block];
            info.queued = false;
            if info.refs > 0 {
                continue; // reused as a prefix since it was released
            }
            if let Some(hash) = info.hash.take()
                && self.registered.get(&hash) == Some(&block)
            {
                self.registered.remove(&hash);
            }
            info.tokens.clear();
            self.hold(block);
            return block;
        }
    }
}

/// The hash of a block's tokens chained with the hash of the blocks before it.
fn chain(parent: u64, tokens: &[u32]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut hasher);
    tokens.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(n: usize, offset: u32) -> Vec<u32> {
        (0..n as u32).map(|t| t + offset).collect()
    }

    #[test]
    fn full_blocks_are_found_again_by_their_tokens_and_what_precedes_them() {
        let mut pool = KvPool::new(1, 2, 8);
        let prompt = tokens(40, 0);
        let mut a = BlockTable::default();
        assert_eq!(pool.reuse_prefix(&mut a, &prompt, 8), 0);
        assert!(pool.grow(&mut a, 40));
        assert_eq!((a.blocks.len(), pool.free_blocks()), (3, 5));
        pool.register_full(&mut a, &prompt);

        // The same first 32 tokens: two blocks reused, the same ones, held twice.
        let mut b = BlockTable::default();
        let mut other = prompt[..32].to_vec();
        other.extend(tokens(8, 1000));
        assert_eq!(pool.reuse_prefix(&mut b, &other, 8), 32);
        assert_eq!(b.blocks, a.blocks[..2]);
        assert_eq!(pool.free_blocks(), 5);
        // A different first block shares nothing, even if the second matches.
        let mut c = BlockTable::default();
        let mut shifted = tokens(16, 500);
        shifted.extend(&prompt[16..32]);
        assert_eq!(pool.reuse_prefix(&mut c, &shifted, 8), 0);
        // max_blocks caps the reuse (a prompt keeps its last token to compute).
        let mut d = BlockTable::default();
        assert_eq!(pool.reuse_prefix(&mut d, &prompt, 1), 16);
        pool.release(&mut d);

        // Released blocks stay reusable until the pool needs them.
        pool.release(&mut a);
        pool.release(&mut b);
        assert_eq!(pool.free_blocks(), 8);
        let mut e = BlockTable::default();
        assert_eq!(pool.reuse_prefix(&mut e, &prompt, 8), 32);
        pool.release(&mut e);
        // Taking every block evicts them.
        let mut f = BlockTable::default();
        assert!(pool.grow(&mut f, 8 * BLOCK_TOKENS));
        assert!(!pool.grow(&mut f, 9 * BLOCK_TOKENS), "the pool is full");
        pool.release(&mut f);
        let mut g = BlockTable::default();
        assert_eq!(pool.reuse_prefix(&mut g, &prompt, 8), 0);
    }

    #[test]
    fn a_held_block_is_never_handed_out_again() {
        let mut pool = KvPool::new(1, 2, 4);
        let prompt = tokens(32, 0);
        let mut a = BlockTable::default();
        assert!(pool.grow(&mut a, 32));
        pool.register_full(&mut a, &prompt);
        pool.release(&mut a);
        // Reused while still in the idle queue: taking blocks must skip it.
        let mut b = BlockTable::default();
        assert_eq!(pool.reuse_prefix(&mut b, &prompt, 4), 32);
        let mut c = BlockTable::default();
        assert!(pool.grow(&mut c, 32));
        assert!(c.blocks.iter().all(|x| !b.blocks.contains(x)));
        assert_eq!(pool.free_blocks(), 0);
        assert!((pool.usage() - 1.0).abs() < 1e-9);
    }
}
