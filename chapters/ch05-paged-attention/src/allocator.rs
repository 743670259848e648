//! The block allocator: a fixed pool of KV blocks handed out and taken back in O(1), with a
//! reference count per block so that several sequences can share one (prefix sharing).
//!
//! This is the "physical page allocator" of the OS analogy: it knows nothing about tokens or
//! sequences, only which block ids are free and how many owners each used block has. With prefix
//! caching it also keeps the names of full blocks ([`PrefixCache`]) and, like a page cache, keeps
//! a named block's contents after its last owner is done, in an [`Lru`] list, until the memory is
//! needed: a later request with the same prefix revives it instead of computing it again.
//!
//! Every block is in exactly one of three states: **free** (on the stack, no owner, no name),
//! **in use** (one or more owners, maybe a name) or **parked** (no owner, a name, in the LRU).

use crate::block_table::BlockId;
use crate::lru::Lru;
use crate::prefix::{PrefixCache, PrefixCacheStats};
use ch00_model::{ModelError, Result};

// ANCHOR: allocator
/// A fixed pool of `num_blocks` blocks. Free blocks sit on a stack, so allocate and free are a
/// push or a pop; `ref_count[b] == 0` exactly when `b` is on the free stack or parked.
#[derive(Debug, Clone)]
pub struct BlockAllocator {
    free: Vec<BlockId>,
    ref_count: Vec<u32>,
    /// Names of full blocks, in use or parked (empty when prefix caching is off: nothing is named).
    prefix: PrefixCache,
    /// Named blocks nobody holds: kept for a later hit, evicted least recently used first.
    parked: Lru,
    stats: PrefixCacheStats,
}

impl BlockAllocator {
    pub fn new(num_blocks: usize) -> Result<Self> {
        if num_blocks == 0 {
            return Err(ModelError::InvalidSettings("a KV pool needs at least one block".into()));
        }
        Ok(BlockAllocator {
            // Reversed so that block 0 is handed out first (easier to read in traces).
            free: (0..num_blocks).rev().collect(),
            ref_count: vec![0; num_blocks],
            prefix: PrefixCache::default(),
            parked: Lru::default(),
            stats: PrefixCacheStats::default(),
        })
    }

    /// Takes a block with one owner: a free one, else the least recently used parked one (its
    /// cached K/V is dropped); `None` when every block is in use (the scheduler's cue to preempt).
    pub fn allocate(&mut self) -> Option<BlockId> {
        let b = match self.free.pop() {
            Some(b) => b,
            None => {
                let b = self.parked.pop_oldest()?;
                self.prefix.forget(b); // about to be overwritten: nobody may find it any more
                self.stats.evictions += 1;
                b
            }
        };
        self.ref_count[b] = 1;
        Some(b)
    }

    /// Adds an owner to a block that is already in use (a second sequence shares it).
    pub fn share(&mut self, b: BlockId) -> Result<()> {
        match self.ref_count.get_mut(b) {
            Some(rc) if *rc > 0 => {
                *rc += 1;
                Ok(())
            }
            _ => Err(ModelError::InvalidBatch(format!("block {b} is not in use and cannot be shared"))),
        }
    }

    /// Drops one owner. When the last one lets go, a named block is parked (its K/V stays
    /// findable) and any other block returns to the free stack. Returns whether it was the last
    /// owner. Freeing a block that is not in use is an error, never a silent no-op.
    pub fn release(&mut self, b: BlockId) -> Result<bool> {
        let rc = self
            .ref_count
            .get_mut(b)
            .filter(|rc| **rc > 0)
            .ok_or_else(|| ModelError::InvalidBatch(format!("block {b} freed while not in use")))?;
        *rc -= 1;
        let last = *rc == 0;
        if last && self.prefix.hash_of(b).is_some() {
            self.parked.push(b);
        } else if last {
            self.free.push(b);
        }
        Ok(last)
    }
    // ANCHOR_END: allocator

    // ANCHOR: prefix
    /// The blocks holding the first full blocks of `tokens` (see [`PrefixCache::lookup`]), in use
    /// or parked. Changes nothing: admission may still say no.
    pub fn lookup(&self, tokens: &[u32], block_size: usize, max_blocks: usize) -> (Vec<BlockId>, u64) {
        self.prefix.lookup(tokens, block_size, max_blocks)
    }

    /// How many of `hits` are parked: reviving them takes that many blocks from [`Self::num_free`].
    pub fn parked_among(&self, hits: &[BlockId]) -> usize {
        hits.iter().filter(|&&b| self.parked.contains(b)).count()
    }

    /// Takes an owner on every block a lookup found: a block in use gains one, a parked block is
    /// revived (out of the LRU, reference count back to 1). Counts the lookup: `queried` tokens
    /// looked up, `hits.len() * block_size` of them found. A block without a name is an error,
    /// raised before anything changes.
    pub fn take_hits(&mut self, hits: &[BlockId], block_size: usize, queried: usize) -> Result<()> {
        if let Some(b) = hits.iter().find(|&&b| self.prefix.hash_of(b).is_none()) {
            return Err(ModelError::InvalidBatch(format!("block {b} is not in the prefix cache")));
        }
        for &b in hits {
            if self.parked.remove(b) {
                self.ref_count[b] = 1;
            } else {
                self.share(b)?; // named and not parked, so in use: cannot fail
            }
        }
        let found = (hits.len() * block_size).min(queried);
        self.stats.hits += found;
        self.stats.misses += queried - found;
        Ok(())
    }

    /// Names a block in use whose K/V is now written, so later lookups find it; whether it was
    /// named (a block that is not in use, or a name or block already in the index, is not).
    pub fn name(&mut self, hash: u64, b: BlockId) -> bool {
        self.ref_count(b) > 0 && self.prefix.insert(hash, b)
    }
    // ANCHOR_END: prefix

    pub fn num_blocks(&self) -> usize {
        self.ref_count.len()
    }

    /// Blocks [`Self::allocate`] can hand out: the free ones and the parked ones it would evict.
    pub fn num_free(&self) -> usize {
        self.free.len() + self.parked.len()
    }

    /// Blocks with at least one owner.
    pub fn num_used(&self) -> usize {
        self.num_blocks() - self.num_free()
    }

    /// Blocks nobody holds whose K/V is kept for a prefix hit.
    pub fn num_parked(&self) -> usize {
        self.parked.len()
    }

    pub fn is_parked(&self, b: BlockId) -> bool {
        self.parked.contains(b)
    }

    pub fn ref_count(&self, b: BlockId) -> u32 {
        self.ref_count.get(b).copied().unwrap_or(0)
    }

    /// Hits, misses (tokens) and evictions (blocks) since the pool was made.
    pub fn prefix_stats(&self) -> PrefixCacheStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn zero_blocks_is_an_error() {
        assert!(matches!(BlockAllocator::new(0), Err(ModelError::InvalidSettings(_))));
    }

    #[test]
    fn allocate_until_empty_then_free_returns_blocks() {
        let mut a = BlockAllocator::new(3).unwrap();
        let got: Vec<_> = (0..3).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(got, vec![0, 1, 2]);
        assert_eq!(a.allocate(), None);
        assert!(a.release(1).unwrap());
        assert_eq!(a.allocate(), Some(1));
    }

    #[test]
    fn shared_block_is_freed_by_its_last_owner_only() {
        let mut a = BlockAllocator::new(2).unwrap();
        let b = a.allocate().unwrap();
        a.share(b).unwrap();
        assert_eq!(a.ref_count(b), 2);
        assert!(!a.release(b).unwrap());
        assert_eq!(a.num_free(), 1);
        assert!(a.release(b).unwrap());
        assert_eq!(a.num_free(), 2);
    }

    #[test]
    fn double_free_and_sharing_a_free_block_are_errors() {
        let mut a = BlockAllocator::new(2).unwrap();
        let b = a.allocate().unwrap();
        a.release(b).unwrap();
        assert!(a.release(b).is_err());
        assert!(a.release(99).is_err());
        assert!(a.share(b).is_err());
        assert_eq!(a.num_free(), 2, "a failed release must not corrupt the pool");
    }

    #[test]
    fn a_named_block_is_parked_then_revived_or_evicted_oldest_first() {
        let mut a = BlockAllocator::new(4).unwrap();
        let (x, y, z) = (a.allocate().unwrap(), a.allocate().unwrap(), a.allocate().unwrap());
        assert!(a.name(10, x) && a.name(11, y));
        assert!(!a.name(12, 3), "a free block cannot be named");
        // Last owners let go: named blocks are parked (still findable), the other one is free.
        for b in [y, x, z] {
            assert!(a.release(b).unwrap());
        }
        assert_eq!((a.num_free(), a.num_parked(), a.num_used()), (4, 2, 0));
        assert!(a.is_parked(x) && a.is_parked(y) && !a.is_parked(z));
        // A hit revives a parked block: one owner again, out of the LRU, counted in tokens.
        a.take_hits(&[x], 2, 5).unwrap();
        assert_eq!((a.ref_count(x), a.is_parked(x), a.num_free()), (1, false, 3));
        assert_eq!(a.prefix_stats(), PrefixCacheStats { hits: 2, misses: 3, evictions: 0 });
        // A hit on a block in use adds an owner; an unnamed block is refused and changes nothing.
        a.take_hits(&[x], 2, 2).unwrap();
        assert_eq!(a.ref_count(x), 2);
        assert!(a.take_hits(&[x, z], 2, 4).is_err());
        assert_eq!((a.ref_count(x), a.ref_count(z)), (2, 0));
        // Free blocks go first; then the parked one is evicted and its name dropped.
        let got: Vec<_> = (0..2).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(got, vec![z, 3]);
        assert_eq!(a.allocate(), Some(y));
        assert_eq!((a.prefix_stats().evictions, a.prefix.block_of(11), a.prefix.hash_of(x)), (1, None, Some(10)));
        assert_eq!(a.allocate(), None);
    }

    #[test]
    fn turn_two_of_a_chat_hits_every_full_block_of_turn_one() {
        let bs = 4;
        let mut a = BlockAllocator::new(8).unwrap();
        // Turn 1: a 10-token prompt and a 6-token answer; the K/V of the first 15 tokens is
        // written (the last sampled token is never fed back), so 3 full blocks get names.
        let turn1: Vec<u32> = (0..16).collect();
        let table: Vec<BlockId> = (0..4).map(|_| a.allocate().unwrap()).collect();
        let mut parent = 0;
        for (i, chunk) in turn1[..15].chunks_exact(bs).enumerate() {
            parent = crate::prefix::block_hash(parent, chunk);
            assert!(a.name(parent, table[i]));
        }
        for &b in table.iter().rev() {
            a.release(b).unwrap();
        }
        assert_eq!((a.num_used(), a.num_parked()), (0, 3));
        // Turn 2 = turn 1's prompt + answer + a new message: all 3 blocks are found and revived.
        let turn2: Vec<u32> = turn1.iter().copied().chain(100..107).collect();
        let (hits, last) = a.lookup(&turn2, bs, (turn2.len() - 1) / bs);
        assert_eq!((&hits[..], last), (&table[..3], parent));
        assert_eq!(a.parked_among(&hits), 3);
        a.take_hits(&hits, bs, turn2.len()).unwrap();
        assert_eq!((a.num_parked(), a.num_used()), (0, 3));
        assert!(hits.iter().all(|&b| a.ref_count(b) == 1));
        let st = a.prefix_stats();
        assert_eq!((st.hits, st.misses, st.evictions), (12, 11, 0));
        assert!((st.hit_rate() - 12.0 / 23.0).abs() < 1e-12);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc(usize),
        Share(usize, usize),
        Drop(usize),
        /// Owner, which of its blocks, token: names the block `block_hash(0, [token])`.
        Name(usize, usize, u32),
        /// Owner, token: looks the one-token prefix up and takes the block found, if any.
        Hit(usize, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..6).prop_map(Op::Alloc),
            (0usize..6, 0usize..64).prop_map(|(o, i)| Op::Share(o, i)),
            (0usize..6).prop_map(Op::Drop),
            (0usize..6, 0usize..64, 0u32..8).prop_map(|(o, i, t)| Op::Name(o, i, t)),
            (0usize..6, 0u32..8).prop_map(|(o, t)| Op::Hit(o, t)),
        ]
    }

    proptest! {
        /// Six owners (think: sequences with block tables) allocate, share each other's blocks,
        /// name blocks, revive named blocks through lookups and drop everything they hold, in any
        /// order, against a model of what the allocator must do. After every operation: every
        /// block is exactly one of free, parked or in use (so none is both free and referenced);
        /// each block's ref count equals the number of tables holding it; the index names exactly
        /// the model's named blocks, each in use or parked, and no free block; the parked blocks
        /// are in the order they were let go; allocation succeeds whenever a block is free or
        /// parked, takes free blocks first and evicts the least recently parked one. When every
        /// owner has dropped its blocks, the whole pool is allocatable again.
        #[test]
        fn invariants_hold_for_any_operation_sequence(n in 1usize..24, ops in proptest::collection::vec(op(), 0..200)) {
            let mut a = BlockAllocator::new(n).unwrap();
            let mut tables: Vec<Vec<BlockId>> = vec![Vec::new(); 6];
            let mut names: HashMap<BlockId, u64> = HashMap::new(); // the model's index
            let mut lru: Vec<BlockId> = Vec::new(); // the model's parked blocks, oldest first
            let mut evictions = 0;
            let name_of = |t: u32| crate::prefix::block_hash(0, &[t]);
            for op in ops {
                match op {
                    Op::Alloc(o) => {
                        let (free_before, parked_before) = (a.free.len(), a.num_parked());
                        match a.allocate() {
                            Some(b) => {
                                prop_assert!(tables.iter().all(|t| !t.contains(&b)), "block {} handed out twice", b);
                                if free_before == 0 {
                                    prop_assert_eq!(Some(b), lru.first().copied(), "not the least recently used");
                                    lru.remove(0);
                                    names.remove(&b);
                                    evictions += 1;
                                } else {
                                    prop_assert!(!lru.contains(&b), "evicted while a free block was left");
                                }
                                tables[o].push(b);
                            }
                            None => prop_assert_eq!(free_before + parked_before, 0, "allocation failed with blocks left"),
                        }
                    }
                    Op::Share(o, i) => {
                        let all: Vec<BlockId> = tables.iter().flatten().copied().collect();
                        if !all.is_empty() {
                            let b = all[i % all.len()];
                            a.share(b).unwrap();
                            tables[o].push(b);
                        }
                    }
                    Op::Drop(o) => {
                        let mine = std::mem::take(&mut tables[o]);
                        for (j, &b) in mine.iter().enumerate().rev() {
                            let last = a.release(b).unwrap();
                            let held = mine[..j].contains(&b) || tables.iter().flatten().any(|&x| x == b);
                            prop_assert_eq!(last, !held);
                            if last && names.contains_key(&b) {
                                lru.push(b);
                            }
                        }
                    }
                    Op::Name(o, i, t) => {
                        if !tables[o].is_empty() {
                            let b = tables[o][i % tables[o].len()];
                            let h = name_of(t);
                            let fresh = !names.contains_key(&b) && !names.values().any(|&x| x == h);
                            prop_assert_eq!(a.name(h, b), fresh);
                            if fresh {
                                names.insert(b, h);
                            }
                        }
                    }
                    Op::Hit(o, t) => {
                        let (hits, _) = a.lookup(&[t, 99], 1, 1);
                        let expect: Vec<BlockId> = names.iter().filter(|&(_, &h)| h == name_of(t)).map(|(&b, _)| b).collect();
                        prop_assert_eq!(&hits, &expect);
                        prop_assert_eq!(a.parked_among(&hits), hits.iter().filter(|b| lru.contains(b)).count());
                        a.take_hits(&hits, 1, 2).unwrap();
                        lru.retain(|b| !hits.contains(b));
                        tables[o].extend(&hits);
                    }
                }
                let mut held: HashMap<BlockId, u32> = HashMap::new();
                for &b in tables.iter().flatten() {
                    *held.entry(b).or_default() += 1;
                }
                prop_assert_eq!(a.free.len() + a.num_parked() + held.len(), n, "a block in two states, or in none");
                prop_assert_eq!(a.num_used(), held.len());
                for b in 0..n {
                    prop_assert_eq!(a.ref_count(b), held.get(&b).copied().unwrap_or(0));
                    prop_assert!(!(a.free.contains(&b) && held.contains_key(&b)), "block {} free and referenced", b);
                    prop_assert!(!(a.is_parked(b) && held.contains_key(&b)), "block {} parked and referenced", b);
                    prop_assert_eq!(a.prefix.hash_of(b), names.get(&b).copied(), "index disagrees on block {}", b);
                    if let Some(h) = a.prefix.hash_of(b) {
                        prop_assert_eq!(a.prefix.block_of(h), Some(b));
                        prop_assert!(held.contains_key(&b) || a.is_parked(b), "named block {} neither held nor parked", b);
                    }
                }
                prop_assert_eq!(a.prefix.len(), names.len());
                prop_assert_eq!(a.parked.iter().collect::<Vec<_>>(), lru.clone(), "LRU order");
                prop_assert_eq!(a.prefix_stats().evictions, evictions);
            }
            for t in &mut tables {
                for b in t.drain(..) {
                    a.release(b).unwrap();
                }
            }
            prop_assert_eq!(a.num_free(), n);
            prop_assert_eq!(a.num_parked(), a.prefix.len());
        }
    }
}
