//! Reference answers for chapter 5 (compiled instead of `src/ch05.rs` with `--features solutions`).

use crate::types::{BlockId, BlockPool, BlockQueue, BlockStep, ExerciseError, Result, WriteTarget};
use std::collections::VecDeque;

pub fn allocate(pool: &mut BlockPool) -> Option<BlockId> {
    let b = pool.free.pop()?;
    pool.ref_count[b] = 1;
    Some(b)
}

pub fn share(pool: &mut BlockPool, b: BlockId) -> Result<()> {
    match pool.ref_count.get_mut(b) {
        Some(rc) if *rc > 0 => {
            *rc += 1;
            Ok(())
        }
        _ => Err(ExerciseError::BlockNotInUse(b)),
    }
}

pub fn release(pool: &mut BlockPool, b: BlockId) -> Result<bool> {
    let rc = pool.ref_count.get_mut(b).filter(|rc| **rc > 0).ok_or(ExerciseError::BlockNotInUse(b))?;
    *rc -= 1;
    if *rc == 0 {
        pool.free.push(b);
    }
    Ok(*rc == 0)
}

pub fn slot_mapping(table: &[BlockId], block_size: usize, positions: &[usize]) -> Result<Vec<usize>> {
    if block_size == 0 {
        return Err(ExerciseError::InvalidSettings("block_size must be at least 1".into()));
    }
    positions
        .iter()
        .map(|&p| {
            let block = table.get(p / block_size).ok_or(ExerciseError::OutOfRange {
                what: "position",
                index: p,
                len: table.len() * block_size,
            })?;
            Ok(block * block_size + p % block_size)
        })
        .collect()
}

pub fn schedule_blocks(q: &mut BlockQueue) -> Result<BlockStep> {
    let bs = q.block_size;
    if bs == 0 {
        return Err(ExerciseError::InvalidSettings("block_size must be at least 1".into()));
    }
    let mut step = BlockStep::default();
    let mut i = 0;
    while i < q.running.len() {
        let seq = &mut q.running[i];
        while seq.table.len() < seq.tokens.div_ceil(bs) {
            let Some(b) = q.free.pop() else { break };
            seq.table.push(b);
        }
        if seq.table.len() >= seq.tokens.div_ceil(bs) {
            i += 1;
            continue;
        }
        // Out of blocks: preempt the youngest (maybe this one) and retry.
        let Some(mut victim) = q.running.pop() else { break };
        q.free.extend(victim.table.drain(..).rev()); // tail first, as the chapter's allocator
        step.preempted.push(victim.id);
        q.waiting.push_front(victim);
    }
    while step.preempted.is_empty() {
        let Some(front) = q.waiting.front() else { break };
        let need = front.tokens.div_ceil(bs);
        let reserve = if q.running.is_empty() { 0 } else { q.watermark };
        if q.free.len() < need + reserve {
            break;
        }
        let Some(mut seq) = q.waiting.pop_front() else { break };
        let at = q.free.len() - need;
        seq.table.extend(q.free.drain(at..).rev());
        step.admitted.push(seq.id);
        q.running.push(seq);
    }
    Ok(step)
}

pub fn prepare_write(pool: &mut BlockPool, table: &mut Vec<BlockId>, block_size: usize, pos: usize) -> Result<WriteTarget> {
    if block_size == 0 {
        return Err(ExerciseError::InvalidSettings("block_size must be at least 1".into()));
    }
    let (idx, offset) = (pos / block_size, pos % block_size);
    let next = table.len() * block_size;
    if pos > next {
        return Err(ExerciseError::OutOfRange { what: "position", index: pos, len: next + 1 });
    }
    if pos == next {
        let b = pool.free.pop().ok_or(ExerciseError::OutOfBlocks)?;
        pool.ref_count[b] = 1;
        table.push(b);
        return Ok(WriteTarget::NewBlock(b));
    }
    let from = table[idx];
    match pool.ref_count.get(from).copied() {
        None | Some(0) => Err(ExerciseError::BlockNotInUse(from)),
        Some(1) => Ok(WriteTarget::InPlace(from)),
        Some(_) => {
            let to = pool.free.pop().ok_or(ExerciseError::OutOfBlocks)?;
            pool.ref_count[to] = 1;
            pool.ref_count[from] -= 1;
            table[idx] = to;
            Ok(WriteTarget::Copy { from, to, rows: offset })
        }
    }
}

pub fn chunk_shares(running: &[(usize, bool)], budget: usize, max_chunk: usize) -> Vec<usize> {
    let mut left = budget;
    let mut shares = vec![0; running.len()];
    for prefills in [false, true] {
        for (i, &(uncomputed, prefilling)) in running.iter().enumerate() {
            if prefilling == prefills {
                shares[i] = uncomputed.min(if prefilling { max_chunk } else { 1 }).min(left);
                left -= shares[i];
            }
        }
    }
    shares
}

pub fn park(parked: &mut VecDeque<BlockId>, b: BlockId) {
    revive(parked, b);
    parked.push_back(b);
}

pub fn revive(parked: &mut VecDeque<BlockId>, b: BlockId) -> bool {
    match parked.iter().position(|&x| x == b) {
        Some(i) => parked.remove(i).is_some(),
        None => false,
    }
}

pub fn evict(parked: &mut VecDeque<BlockId>) -> Option<BlockId> {
    parked.pop_front()
}
