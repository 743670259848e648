//! Chapter 5 — PagedAttention (`book/src/ch05-paged-attention.md`,
//! `chapters/ch05-paged-attention/src/`).
//!
//! Replace each `todo!()` with your answer, then `cargo test -p exercises ch05 -- --include-ignored`.
#![allow(unused_variables, clippy::ptr_arg)] // the todo!() bodies use nothing yet

use crate::types::{BlockId, BlockPool, BlockQueue, BlockStep, Result, WriteTarget};
use std::collections::VecDeque;

/// **Chapter 5 — allocate with reference counts** (one exercise with [`share`] and [`release`]).
///
/// Take the block on top of `pool.free`, give it one owner and return it; `None` when the pool is
/// empty (the scheduler's cue to preempt).
pub fn allocate(pool: &mut BlockPool) -> Option<BlockId> {
    todo!("chapter 5 (book/src/ch05-paged-attention.md): allocate")
}

/// **Chapter 5 — share a block** (one exercise with [`allocate`] and [`release`]).
///
/// Add an owner to block `b`, which a second sequence now also holds. Errors: `b` is free or not a
/// block of the pool (`BlockNotInUse`).
pub fn share(pool: &mut BlockPool, b: BlockId) -> Result<()> {
    todo!("chapter 5 (book/src/ch05-paged-attention.md): share")
}

/// **Chapter 5 — free with reference counts** (one exercise with [`allocate`] and [`share`]).
///
/// Drop one owner of block `b`; when its last owner lets go the block goes back on top of
/// `pool.free`. Return whether it did. Errors, leaving the pool untouched: `b` is already free or
/// not a block of the pool (`BlockNotInUse`) — a double free is a bug, never a silent no-op.
pub fn release(pool: &mut BlockPool, b: BlockId) -> Result<bool> {
    todo!("chapter 5 (book/src/ch05-paged-attention.md): release")
}

/// **Chapter 5 (and chapter 6's reshape-and-cache kernel) — slot mapping through a block table.**
///
/// A sequence's token at position `p` lives in block `table[p / block_size]`, at offset
/// `p % block_size` inside it. A GPU kernel addresses the pool as one flat array of token slots
/// (chapter 6's `rope_cache.cu` writes K and V there), so return, for every position in
/// `positions`, its flat slot `block * block_size + offset`.
///
/// Errors: `block_size` is 0 (`InvalidSettings`); a position beyond what the table covers
/// (`OutOfRange`).
pub fn slot_mapping(table: &[BlockId], block_size: usize, positions: &[usize]) -> Result<Vec<usize>> {
    todo!("chapter 5 (book/src/ch05-paged-attention.md, chapter 6): slot_mapping")
}

/// **Chapter 5 — admission by free blocks, with preemption.**
///
/// One scheduling step of chapter 5's `BlockScheduler::schedule`, without prefix sharing:
///
/// 1. Grow: walk `q.running` from oldest (first) to youngest (last). Each sequence needs
///    ⌈tokens / block_size⌉ blocks in its table; take missing ones from the top of `q.free`. When
///    the pool is dry, preempt the *youngest* running sequence — possibly the one being grown:
///    remove it from `running`, push its blocks back onto `q.free` tail first (its last block
///    first, as chapter 5 gives them back), empty its table, put it at the *front* of `q.waiting`
///    (it keeps its tokens and is recomputed later) — and try again.
/// 2. Admit, only if nobody was preempted in this step: while the front of `q.waiting` needs no
///    more blocks than are free, less `q.watermark` blocks kept back when anyone is running, give
///    it its blocks and append it to `running`. First come, first served: nobody overtakes the
///    front.
///
/// Return the ids admitted and preempted, in order. Errors: `block_size` is 0 (`InvalidSettings`).
pub fn schedule_blocks(q: &mut BlockQueue) -> Result<BlockStep> {
    todo!("chapter 5 (book/src/ch05-paged-attention.md): schedule_blocks")
}

/// **Chapter 5 — copy-on-write of a shared block.**
///
/// A sequence with block table `table` is about to write its token at position `pos` (its next
/// position, at most `table.len() * block_size`). Decide where the write goes and prepare it,
/// working on `pool.free` and `pool.ref_count` directly:
///
/// - `pos` opens a new block (`pos == table.len() * block_size`): take a block from the top of the
///   pool, give it one owner, append it → `NewBlock`;
/// - the block holding `pos` has one owner → `InPlace`;
/// - it is shared (more than one owner): take a fresh block with one owner, drop this sequence's
///   reference to the old one, put the fresh block in its place in `table` → `Copy`, with the
///   number of rows before `pos` in that block that the caller must copy.
///
/// Errors, leaving pool and table untouched: `block_size` is 0 (`InvalidSettings`); `pos` beyond
/// the next position (`OutOfRange`); the table holds a free block (`BlockNotInUse`); a block is
/// needed and the pool is empty (`OutOfBlocks`).
pub fn prepare_write(pool: &mut BlockPool, table: &mut Vec<BlockId>, block_size: usize, pos: usize) -> Result<WriteTarget> {
    todo!("chapter 5 (book/src/ch05-paged-attention.md): prepare_write")
}

/// **Chapter 5 — chunked prefill: split a step's token budget.**
///
/// `running[i]` is running sequence i's (tokens it has not computed yet, still prefilling), in
/// admission order. Return how many tokens each computes this step: first every decode (not
/// prefilling), oldest first, one token each while the budget lasts; then every sequence still
/// prefilling, oldest first, a chunk of at most `max_chunk` tokens and at most what the budget has
/// left (possibly 0).
pub fn chunk_shares(running: &[(usize, bool)], budget: usize, max_chunk: usize) -> Vec<usize> {
    todo!("chapter 5 (book/src/ch05-paged-attention.md): chunk_shares")
}

/// **Chapter 5 — the prefix cache's LRU: park a block** (one exercise with [`revive`] and [`evict`]).
///
/// Block `b`'s last owner let go, but its name stays in the prefix cache: put it at the back of
/// `parked` (the most recently used end). A block already parked moves to the back.
pub fn park(parked: &mut VecDeque<BlockId>, b: BlockId) {
    todo!("chapter 5 (book/src/ch05-paged-attention.md): park")
}

/// **Chapter 5 — revive a parked block** (one exercise with [`park`] and [`evict`]).
///
/// A lookup found parked block `b`: take it out of `parked` (it has an owner again). Return
/// whether it was parked.
pub fn revive(parked: &mut VecDeque<BlockId>, b: BlockId) -> bool {
    todo!("chapter 5 (book/src/ch05-paged-attention.md): revive")
}

/// **Chapter 5 — evict the least recently parked block** (one exercise with [`park`] and [`revive`]).
///
/// The pool has no free block left: take the block parked longest ago out of `parked` and return
/// it (its name is dropped and its memory reused); `None` when nothing is parked.
pub fn evict(parked: &mut VecDeque<BlockId>) -> Option<BlockId> {
    todo!("chapter 5 (book/src/ch05-paged-attention.md): evict")
}
