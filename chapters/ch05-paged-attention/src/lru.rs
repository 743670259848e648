//! The evictable list of the prefix cache: blocks no sequence holds any more but whose K/V is kept
//! (and still findable by name) until the pool needs the memory, least recently used out first.

use crate::block_table::BlockId;
use std::collections::{BTreeMap, HashMap};

// ANCHOR: lru
/// Blocks ordered by when they were last let go. Each gets a stamp from a counter that only grows,
/// so the smallest stamp is the least recently used block. vLLM links its free blocks into a
/// doubly linked list for O(1); a tree is O(log n) per block, nothing next to a forward pass.
#[derive(Debug, Clone, Default)]
pub struct Lru {
    by_stamp: BTreeMap<u64, BlockId>,
    stamp_of: HashMap<BlockId, u64>,
    next: u64,
}

impl Lru {
    /// Puts `b` at the most recently used end (moving it there if it is already in).
    pub fn push(&mut self, b: BlockId) {
        self.remove(b);
        self.by_stamp.insert(self.next, b);
        self.stamp_of.insert(b, self.next);
        self.next += 1;
    }

    /// Takes `b` out wherever it is (a prefix hit revives it); whether it was there.
    pub fn remove(&mut self, b: BlockId) -> bool {
        match self.stamp_of.remove(&b) {
            Some(stamp) => self.by_stamp.remove(&stamp).is_some(),
            None => false,
        }
    }

    /// Takes out the least recently used block: the one to evict.
    pub fn pop_oldest(&mut self) -> Option<BlockId> {
        let (_, b) = self.by_stamp.pop_first()?;
        self.stamp_of.remove(&b);
        Some(b)
    }
    // ANCHOR_END: lru

    pub fn contains(&self, b: BlockId) -> bool {
        self.stamp_of.contains_key(&b)
    }

    pub fn len(&self) -> usize {
        self.by_stamp.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_stamp.is_empty()
    }

    /// Least recently used first.
    pub fn iter(&self) -> impl Iterator<Item = BlockId> + '_ {
        self.by_stamp.values().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_goes_first_and_a_removed_block_is_skipped() {
        let mut lru = Lru::default();
        for b in [4, 1, 7, 2] {
            lru.push(b);
        }
        assert!(lru.remove(1));
        assert!(!lru.remove(1));
        lru.push(4); // used again: now the most recent
        assert_eq!(lru.iter().collect::<Vec<_>>(), vec![7, 2, 4]);
        assert_eq!((lru.pop_oldest(), lru.pop_oldest(), lru.pop_oldest(), lru.pop_oldest()), (Some(7), Some(2), Some(4), None));
        assert!(lru.is_empty() && !lru.contains(4));
    }
}
