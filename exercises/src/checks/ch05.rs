//! Checks of the chapter-5 exercises.

use super::Rng;
use crate::ch05::{allocate, chunk_shares, evict, park, prepare_write, release, revive, schedule_blocks, share, slot_mapping};
use std::collections::VecDeque;
use crate::types::{BlockId, BlockPool, BlockQueue, ExerciseError, SeqBlocks, WriteTarget};
use std::collections::HashMap;

pub fn ch05_block_allocator() {
    let mut p = BlockPool::new(3);
    let got: Vec<_> = (0..3).map(|_| allocate(&mut p).unwrap()).collect();
    assert_eq!(got, vec![0, 1, 2], "block 0 is on top of the stack");
    assert_eq!(p.ref_count, vec![1, 1, 1]);
    assert_eq!(allocate(&mut p), None, "an empty pool hands out nothing");
    assert_eq!(release(&mut p, 1), Ok(true));
    assert_eq!(p.ref_count[1], 0);
    assert_eq!(allocate(&mut p), Some(1), "a freed block is handed out again");

    // A shared block returns to the pool with its last owner only.
    let mut p = BlockPool::new(2);
    let b = allocate(&mut p).unwrap();
    share(&mut p, b).unwrap();
    assert_eq!(p.ref_count[b], 2);
    assert_eq!(release(&mut p, b), Ok(false));
    assert_eq!(p.num_free(), 1);
    assert_eq!(release(&mut p, b), Ok(true));
    assert_eq!(p.num_free(), 2);

    // Double frees and sharing a free block are errors that leave the pool intact.
    let before = p.clone();
    assert_eq!(release(&mut p, b), Err(ExerciseError::BlockNotInUse(b)));
    assert_eq!(release(&mut p, 99), Err(ExerciseError::BlockNotInUse(99)));
    assert_eq!(share(&mut p, b), Err(ExerciseError::BlockNotInUse(b)));
    assert_eq!(share(&mut p, 99), Err(ExerciseError::BlockNotInUse(99)));
    assert_eq!(p, before, "a failed call changed the pool");

    // Random owners allocate, share and drop; the counts always match the owners' tables.
    let mut rng = Rng::new(5);
    for round in 0..50 {
        let n = 1 + rng.below(12);
        let mut p = BlockPool::new(n);
        let mut tables: Vec<Vec<BlockId>> = vec![Vec::new(); 4];
        for _ in 0..200 {
            let o = rng.below(4);
            match rng.below(3) {
                0 => match allocate(&mut p) {
                    Some(b) => {
                        assert!(tables.iter().all(|t| !t.contains(&b)), "round {round}: block {b} handed out twice");
                        tables[o].push(b);
                    }
                    None => assert_eq!(p.num_free(), 0, "round {round}: None while blocks are free"),
                },
                1 => {
                    let all: Vec<BlockId> = tables.iter().flatten().copied().collect();
                    if !all.is_empty() {
                        let b = all[rng.below(all.len())];
                        share(&mut p, b).unwrap();
                        tables[o].push(b);
                    }
                }
                _ => {
                    for b in tables[o].drain(..) {
                        release(&mut p, b).unwrap();
                    }
                }
            }
            let mut held: HashMap<BlockId, u32> = HashMap::new();
            for &b in tables.iter().flatten() {
                *held.entry(b).or_default() += 1;
            }
            assert_eq!(p.num_free() + held.len(), n, "round {round}: a block was lost or duplicated");
            for b in 0..n {
                assert_eq!(p.ref_count[b], held.get(&b).copied().unwrap_or(0), "round {round}: ref count of {b}");
            }
        }
    }
}

pub fn ch05_slot_mapping() {
    let table = [7, 2, 9];
    assert_eq!(slot_mapping(&table, 4, &[0, 1, 3]), Ok(vec![28, 29, 31]));
    assert_eq!(slot_mapping(&table, 4, &[4, 5, 11]), Ok(vec![8, 9, 39]), "the table, not the position, picks the block");
    assert_eq!(slot_mapping(&table, 4, &[]), Ok(vec![]));
    assert_eq!(slot_mapping(&[3], 1, &[0]), Ok(vec![3]));
    assert!(matches!(slot_mapping(&table, 4, &[0, 12]), Err(ExerciseError::OutOfRange { .. })));
    assert!(matches!(slot_mapping(&[], 4, &[0]), Err(ExerciseError::OutOfRange { .. })));
    assert!(matches!(slot_mapping(&table, 0, &[0]), Err(ExerciseError::InvalidSettings(_))));
}

fn seq(id: usize, tokens: usize, table: &[BlockId]) -> SeqBlocks {
    SeqBlocks { id, tokens, table: table.to_vec() }
}

fn ids(seqs: &[SeqBlocks]) -> Vec<usize> {
    seqs.iter().map(|s| s.id).collect()
}

pub fn ch05_schedule_blocks() {
    // Admission by free blocks, first come first served: C (1 block) does not overtake.
    let mut q = BlockQueue::new(4, 2, 0);
    q.waiting = [seq(0, 3, &[]), seq(1, 3, &[]), seq(2, 5, &[]), seq(3, 1, &[])].into();
    let step = schedule_blocks(&mut q).unwrap();
    assert_eq!((step.admitted, step.preempted), (vec![0, 1], vec![]));
    assert_eq!((q.running[0].table.clone(), q.running[1].table.clone()), (vec![0, 1], vec![2, 3]));
    assert_eq!(q.waiting.len(), 2, "sequence 3 fits but must not overtake sequence 2");

    // Growing at a block boundary: 4 tokens still fit 2 blocks of 2, a 5th needs a third block.
    q.running[0].tokens = 4;
    q.running[1].tokens = 5;
    let step = schedule_blocks(&mut q).unwrap();
    assert_eq!(step.preempted, vec![1], "the youngest is preempted, even when it is the one growing");
    assert!(step.admitted.is_empty(), "nobody is admitted in a step that preempted");
    assert_eq!(ids(&q.running), vec![0]);
    assert_eq!(q.running[0].table, vec![0, 1]);
    assert_eq!(q.waiting.front(), Some(&seq(1, 5, &[])), "the preempted sequence waits at the front, keeping its tokens");
    assert_eq!(q.free, vec![3, 2], "its blocks go back tail first (the last block first)");

    // The oldest grows at the expense of the younger ones, youngest first.
    let mut q = BlockQueue::new(0, 2, 0);
    q.running = vec![seq(10, 5, &[0, 1]), seq(11, 2, &[2]), seq(12, 2, &[3])];
    q.waiting = [seq(13, 1, &[])].into();
    let step = schedule_blocks(&mut q).unwrap();
    assert_eq!(step.preempted, vec![12]);
    assert_eq!(q.running[0].table, vec![0, 1, 3]);
    assert_eq!(ids(&q.running), vec![10, 11]);
    q.running[0].tokens = 8; // needs a 4th block: 11 goes too
    let step = schedule_blocks(&mut q).unwrap();
    assert_eq!(step.preempted, vec![11]);
    assert_eq!(q.running[0].table, vec![0, 1, 3, 2]);
    assert_eq!(ids(&q.waiting.iter().cloned().collect::<Vec<_>>()), vec![11, 12, 13], "oldest victim first");

    // Several victims in one step.
    let mut q = BlockQueue::new(0, 1, 0);
    q.running = vec![seq(0, 3, &[0]), seq(1, 1, &[1]), seq(2, 1, &[2])];
    let step = schedule_blocks(&mut q).unwrap();
    assert_eq!(step.preempted, vec![2, 1]);
    assert_eq!(q.running[0].table, vec![0, 2, 1]);
    assert_eq!(ids(&q.waiting.iter().cloned().collect::<Vec<_>>()), vec![1, 2]);

    // The watermark is kept back while others run, and only then.
    let mut q = BlockQueue::new(4, 2, 1);
    q.waiting = [seq(0, 8, &[])].into(); // 4 blocks: nobody runs, so the watermark is not kept
    assert_eq!(schedule_blocks(&mut q).unwrap().admitted, vec![0]);
    let mut q = BlockQueue::new(4, 2, 1);
    q.running = vec![seq(0, 0, &[])];
    q.waiting = [seq(1, 8, &[]), seq(2, 2, &[])].into();
    assert!(schedule_blocks(&mut q).unwrap().admitted.is_empty(), "4 blocks + 1 watermark > 4 free");
    q.waiting[0].tokens = 6; // 3 blocks + 1 = 4 free: fits, then 1 + 1 > 1 free
    assert_eq!(schedule_blocks(&mut q).unwrap().admitted, vec![1]);
    assert_eq!(q.running[1].table, vec![0, 1, 2]);

    assert!(matches!(schedule_blocks(&mut BlockQueue::new(4, 0, 0)), Err(ExerciseError::InvalidSettings(_))));

    // Random workloads: no block is lost or held twice, and the running sequences have their blocks.
    let mut rng = Rng::new(9);
    for round in 0..200 {
        let (n, bs) = (1 + rng.below(10), 1 + rng.below(4));
        let mut q = BlockQueue::new(n, bs, rng.below(2));
        q.waiting = (0..rng.below(6)).map(|id| seq(id, 1 + rng.below(n * bs), &[])).collect();
        for _ in 0..30 {
            let step = schedule_blocks(&mut q).unwrap();
            let mut seen: Vec<BlockId> = q.free.clone();
            for s in &q.running {
                assert!(s.table.len() >= s.tokens.div_ceil(bs), "round {round}: sequence {} is short of blocks", s.id);
                seen.extend(&s.table);
            }
            assert!(q.waiting.iter().all(|s| s.table.is_empty()), "round {round}: a waiting sequence holds blocks");
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "round {round}: blocks lost or held twice ({step:?})");
            // Every running sequence produces a token; some finish.
            let mut i = 0;
            while i < q.running.len() {
                if rng.below(4) == 0 {
                    let done = q.running.remove(i);
                    q.free.extend(done.table);
                } else {
                    let t = q.running[i].tokens + 1;
                    q.running[i].tokens = t.min(n * bs);
                    i += 1;
                }
            }
        }
    }
}

pub fn ch05_prepare_write() {
    // Two sequences share blocks 0 and 1 (block size 4, 6 tokens each).
    let mut p = BlockPool::new(4);
    p.free = vec![3, 2];
    p.ref_count = vec![2, 2, 0, 0];
    let (mut a, mut b) = (vec![0, 1], vec![0, 1]);
    // a writes position 6, in shared block 1: copy the 2 rows before it into a fresh block.
    assert_eq!(prepare_write(&mut p, &mut a, 4, 6), Ok(WriteTarget::Copy { from: 1, to: 2, rows: 2 }));
    assert_eq!(a, vec![0, 2]);
    assert_eq!(p.ref_count, vec![2, 1, 1, 0]);
    // Now b owns block 1 alone: it writes in place.
    assert_eq!(prepare_write(&mut p, &mut b, 4, 6), Ok(WriteTarget::InPlace(1)));
    assert_eq!((b.clone(), p.ref_count.clone()), (vec![0, 1], vec![2, 1, 1, 0]));
    // Position 8 opens a third block.
    assert_eq!(prepare_write(&mut p, &mut b, 4, 8), Ok(WriteTarget::NewBlock(3)));
    assert_eq!((b.clone(), p.ref_count.clone()), (vec![0, 1, 3], vec![2, 1, 1, 1]));
    // Writing at the start of a shared block still copies (nothing) rather than writing into it.
    let mut c = vec![0];
    p.free = vec![3];
    p.ref_count = vec![2, 1, 1, 0];
    assert_eq!(prepare_write(&mut p, &mut c, 4, 0), Ok(WriteTarget::Copy { from: 0, to: 3, rows: 0 }));
    assert_eq!(p.ref_count, vec![1, 1, 1, 1]);

    // Errors leave pool and table untouched.
    let mut p = BlockPool::new(2);
    p.free = vec![];
    p.ref_count = vec![2, 0];
    let mut t = vec![0];
    let before = (p.clone(), t.clone());
    assert_eq!(prepare_write(&mut p, &mut t, 4, 2), Err(ExerciseError::OutOfBlocks), "shared block, empty pool");
    assert_eq!(prepare_write(&mut p, &mut t, 4, 4), Err(ExerciseError::OutOfBlocks), "new block, empty pool");
    assert!(matches!(prepare_write(&mut p, &mut t, 4, 5), Err(ExerciseError::OutOfRange { .. })), "a gap");
    assert!(matches!(prepare_write(&mut p, &mut t, 0, 0), Err(ExerciseError::InvalidSettings(_))));
    let mut freed = vec![1];
    assert_eq!(prepare_write(&mut p, &mut freed, 4, 1), Err(ExerciseError::BlockNotInUse(1)));
    assert_eq!((p, t), before, "a failed call changed the pool or the table");
}

pub fn ch05_chunk_shares() {
    // A long prompt admitted first, then two decoding sequences, then a short prompt; budget 10.
    let running = [(100, true), (1, false), (1, false), (7, true)];
    assert_eq!(chunk_shares(&running, 10, 64), vec![8, 1, 1, 0], "decodes first, then the oldest prompt");
    assert_eq!(chunk_shares(&running, 10, 5), vec![5, 1, 1, 3], "a chunk cap leaves room for the next prompt");
    assert_eq!(chunk_shares(&running, 1, 64), vec![0, 1, 0, 0], "a budget below the decodes serves the oldest decode");
    assert_eq!(chunk_shares(&running, 0, 64), vec![0, 0, 0, 0]);
    assert_eq!(chunk_shares(&[(3, true)], 100, 64), vec![3], "a chunk never exceeds what is left to compute");
    assert!(chunk_shares(&[], 10, 4).is_empty());
}

pub fn ch05_lru() {
    let mut lru = VecDeque::new();
    assert_eq!(evict(&mut lru), None, "nothing parked");
    for b in [4, 1, 7, 2] {
        park(&mut lru, b);
    }
    assert!(revive(&mut lru, 1), "a lookup takes a parked block back");
    assert!(!revive(&mut lru, 1), "it is no longer parked");
    assert!(!revive(&mut lru, 9), "never parked");
    park(&mut lru, 4); // parked again: now the most recent
    assert_eq!(evict(&mut lru), Some(7), "the least recently parked goes first");
    assert_eq!(evict(&mut lru), Some(2));
    assert_eq!(evict(&mut lru), Some(4));
    assert_eq!(evict(&mut lru), None);
}
