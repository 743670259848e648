//! The block allocator: a fixed pool of KV blocks handed out and taken back in O(1), with a
//! reference count per block so that several sequences can share one (prefix sharing).
//!
//! This is the "physical page allocator" of the OS analogy: it knows nothing about tokens or
//! sequences, only which block ids are free and how many owners each used block has.

use ch00_model::{ModelError, Result};

/// Index of one physical KV block in the pool.
pub type BlockId = usize;

// ANCHOR: allocator
/// A fixed pool of `num_blocks` blocks. Free blocks sit on a stack, so allocate and free are a
/// push or a pop; `ref_count[b] == 0` exactly when `b` is on the free stack.
#[derive(Debug, Clone)]
pub struct BlockAllocator {
    free: Vec<BlockId>,
    ref_count: Vec<u32>,
}

impl BlockAllocator {
    pub fn new(num_blocks: usize) -> Result<Self> {
        if num_blocks == 0 {
            return Err(ModelError::InvalidSettings("a KV pool needs at least one block".into()));
        }
        // Reversed so that block 0 is handed out first (easier to read in traces).
        Ok(BlockAllocator { free: (0..num_blocks).rev().collect(), ref_count: vec![0; num_blocks] })
    }

    /// Takes a free block with one owner, or `None` when the pool is exhausted (the scheduler's
    /// cue to preempt).
    pub fn allocate(&mut self) -> Option<BlockId> {
        let b = self.free.pop()?;
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

    /// Drops one owner; the block returns to the pool when its last owner lets go. Returns
    /// whether it did. Freeing a block that is not in use is an error, never a silent no-op.
    pub fn release(&mut self, b: BlockId) -> Result<bool> {
        let rc = self
            .ref_count
            .get_mut(b)
            .filter(|rc| **rc > 0)
            .ok_or_else(|| ModelError::InvalidBatch(format!("block {b} freed while not in use")))?;
        *rc -= 1;
        if *rc == 0 {
            self.free.push(b);
        }
        Ok(*rc == 0)
    }
    // ANCHOR_END: allocator

    pub fn num_blocks(&self) -> usize {
        self.ref_count.len()
    }

    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    pub fn num_used(&self) -> usize {
        self.num_blocks() - self.num_free()
    }

    pub fn ref_count(&self, b: BlockId) -> u32 {
        self.ref_count.get(b).copied().unwrap_or(0)
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

    #[derive(Debug, Clone)]
    enum Op {
        Alloc(usize),
        Share(usize, usize),
        Drop(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..6).prop_map(Op::Alloc),
            (0usize..6, 0usize..64).prop_map(|(o, i)| Op::Share(o, i)),
            (0usize..6).prop_map(Op::Drop),
        ]
    }

    proptest! {
        /// Six owners (think: sequences with block tables) allocate, share each other's blocks and
        /// drop everything they hold, in any order. After every operation: free + used = total,
        /// and each block's ref count equals the number of tables holding it. When every owner
        /// has dropped its blocks, the whole pool is free again.
        #[test]
        fn invariants_hold_for_any_operation_sequence(n in 1usize..24, ops in proptest::collection::vec(op(), 0..200)) {
            let mut a = BlockAllocator::new(n).unwrap();
            let mut tables: Vec<Vec<BlockId>> = vec![Vec::new(); 6];
            for op in ops {
                match op {
                    Op::Alloc(o) => {
                        if let Some(b) = a.allocate() {
                            prop_assert!(tables.iter().all(|t| !t.contains(&b)), "block {} handed out twice", b);
                            tables[o].push(b);
                        } else {
                            prop_assert_eq!(a.num_free(), 0);
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
                        for b in tables[o].drain(..) {
                            a.release(b).unwrap();
                        }
                    }
                }
                let mut held: HashMap<BlockId, u32> = HashMap::new();
                for &b in tables.iter().flatten() {
                    *held.entry(b).or_default() += 1;
                }
                prop_assert_eq!(a.num_free() + held.len(), n);
                for b in 0..n {
                    prop_assert_eq!(a.ref_count(b), held.get(&b).copied().unwrap_or(0));
                }
            }
            for t in &mut tables {
                for b in t.drain(..) {
                    a.release(b).unwrap();
                }
            }
            prop_assert_eq!(a.num_free(), n);
        }
    }
}
