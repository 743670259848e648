//! Prefix sharing: a full block is named by the hash of its tokens and of every token before it,
//! so two requests that start with the same system prompt find the same blocks and share them.
//! The allocator owns the index: it keeps a block's name while the block is in use or parked in
//! its LRU list, and drops the name when it evicts the block.

use crate::block_table::BlockId;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

// ANCHOR: hash
/// The name of a full block: its tokens chained to the name of the block before it (0 for the
/// first), so equal names mean equal *prefixes*, not just equal blocks.
pub fn block_hash(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = DefaultHasher::new(); // SipHash with fixed keys: the same on every run
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}
// ANCHOR_END: hash

/// Full blocks whose K/V is held, by name: blocks in use, and blocks no sequence holds any more
/// but the allocator keeps for a later hit. A block is forgotten when it is evicted.
#[derive(Debug, Clone, Default)]
pub struct PrefixCache {
    by_hash: HashMap<u64, BlockId>,
    by_block: HashMap<BlockId, u64>,
}

impl PrefixCache {
    // ANCHOR: lookup
    /// The blocks already holding the first full blocks of `tokens`, at most `max_blocks` of
    /// them, with the name of the last one found.
    pub fn lookup(&self, tokens: &[u32], block_size: usize, max_blocks: usize) -> (Vec<BlockId>, u64) {
        let (mut found, mut parent) = (Vec::new(), 0);
        for chunk in tokens.chunks_exact(block_size).take(max_blocks) {
            let h = block_hash(parent, chunk);
            match self.by_hash.get(&h) {
                Some(&b) => found.push(b),
                None => break,
            }
            parent = h;
        }
        (found, parent)
    }
    // ANCHOR_END: lookup

    /// Names a block whose K/V is now written; whether it was named. The first block with a given
    /// name stays the one that is found; a second copy computed at the same time is simply not
    /// shared (and goes straight back to the free list when its owners are done).
    pub fn insert(&mut self, hash: u64, block: BlockId) -> bool {
        let new = !self.by_hash.contains_key(&hash) && !self.by_block.contains_key(&block);
        if new {
            self.by_hash.insert(hash, block);
            self.by_block.insert(block, hash);
        }
        new
    }

    /// Called when a block is reused for something else: its contents are about to be overwritten.
    pub fn forget(&mut self, block: BlockId) {
        if let Some(h) = self.by_block.remove(&block) {
            self.by_hash.remove(&h);
        }
    }

    /// The name of `block`, if it has one.
    pub fn hash_of(&self, block: BlockId) -> Option<u64> {
        self.by_block.get(&block).copied()
    }

    /// The block holding the full block named `hash`, if any.
    pub fn block_of(&self, hash: u64) -> Option<BlockId> {
        self.by_hash.get(&hash).copied()
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

// ANCHOR: stats
/// Prefix-cache counters. `hits` and `misses` are in tokens: of the tokens looked up at admission
/// (a prompt, or a preempted sequence's whole history), those whose K/V was found in the cache and
/// those that had to be computed. `evictions` is in blocks: cached K/V dropped to make room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    pub hits: usize,
    pub misses: usize,
    pub evictions: usize,
}

impl PrefixCacheStats {
    /// Share of looked-up tokens found in the cache (0 before any lookup).
    pub fn hit_rate(&self) -> f64 {
        self.hits as f64 / (self.hits + self.misses).max(1) as f64
    }
}
// ANCHOR_END: stats

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_prefixes_hit_and_a_different_earlier_block_misses() {
        let mut cache = PrefixCache::default();
        let a = [1, 2, 3, 4, 5, 6, 7];
        let h0 = block_hash(0, &a[0..2]);
        let h1 = block_hash(h0, &a[2..4]);
        cache.insert(h0, 10);
        cache.insert(h1, 11);
        assert_eq!(cache.lookup(&[1, 2, 3, 4, 9, 9], 2, 8), (vec![10, 11], h1));
        assert_eq!(cache.lookup(&a, 2, 1).0, vec![10]);
        // Same second block, different first block: a different prefix, so no hit at all.
        assert!(cache.lookup(&[9, 9, 3, 4], 2, 8).0.is_empty());
        // One name per block and one block per name: the first one stays.
        assert!(!cache.insert(h0, 12) && !cache.insert(99, 10));
        assert_eq!((cache.block_of(h0), cache.hash_of(11), cache.hash_of(12)), (Some(10), Some(h1), None));
        cache.forget(10);
        assert!(cache.lookup(&a, 2, 8).0.is_empty());
        assert_eq!(cache.len(), 1);
    }
}
