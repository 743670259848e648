//! Prefix sharing: a full block is named by the hash of its tokens and of every token before it,
//! so two requests that start with the same system prompt find the same blocks and share them.

use crate::allocator::BlockId;
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

/// Full blocks currently in use, by name. A block is forgotten when its last owner frees it
/// (vLLM keeps freed blocks findable until they are reused; that is the next refinement).
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

    /// Names a block whose K/V is now written. The first block with a given name stays the one
    /// that is found; a second copy computed at the same time is simply not shared.
    pub fn insert(&mut self, hash: u64, block: BlockId) {
        if !self.by_hash.contains_key(&hash) && !self.by_block.contains_key(&block) {
            self.by_hash.insert(hash, block);
            self.by_block.insert(block, hash);
        }
    }

    /// Called when a block goes back to the pool: its contents are about to be overwritten.
    pub fn forget(&mut self, block: BlockId) {
        if let Some(h) = self.by_block.remove(&block) {
            self.by_hash.remove(&h);
        }
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

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
        cache.forget(10);
        assert!(cache.lookup(&a, 2, 8).0.is_empty());
        assert_eq!(cache.len(), 1);
    }
}
