//! Collectives between the ranks of one process, with NCCL's meaning: every rank calls the same
//! collective with a buffer of the same length, and every rank leaves with the result. The sum is
//! taken in rank order, so every rank gets the same bits and a run gives the same bits every time
//! (NCCL's ring sums in a fixed order too, for a fixed ring).

use std::sync::{Barrier, Mutex};

/// `world` ranks' meeting point. One collective at a time: every rank must call the same sequence
/// of collectives (as with NCCL on one communicator).
pub struct Group {
    world: usize,
    slots: Mutex<Vec<Vec<f32>>>, // (world) buffers, one per rank, for the collective in flight
    barrier: Barrier,
}

impl Group {
    pub fn new(world: usize) -> Self {
        Group { world, slots: Mutex::new(vec![Vec::new(); world]), barrier: Barrier::new(world) }
    }

    pub fn world(&self) -> usize {
        self.world
    }

    // ANCHOR: all_reduce
    /// Every rank's `buf` becomes the element-wise sum of all ranks' `buf`s, added in rank order.
    pub fn all_reduce_sum(&self, rank: usize, buf: &mut [f32]) {
        self.publish(rank, buf);
        {
            let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            buf.fill(0.0);
            for part in slots.iter() {
                for (b, p) in buf.iter_mut().zip(part) {
                    *b += p;
                }
            }
        }
        self.barrier.wait(); // nobody publishes the next collective before everyone has read this one
    }
    // ANCHOR_END: all_reduce

    /// Every rank gets all ranks' `part`s concatenated in rank order (parts may differ in length).
    pub fn all_gather(&self, rank: usize, part: &[f32]) -> Vec<f32> {
        self.publish(rank, part);
        let out = self.slots.lock().unwrap_or_else(|e| e.into_inner()).concat();
        self.barrier.wait();
        out
    }

    /// Puts this rank's buffer in its slot and waits until every rank has.
    fn publish(&self, rank: usize, buf: &[f32]) {
        {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots[rank].clear();
            slots[rank].extend_from_slice(buf);
        }
        self.barrier.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_reduce_sums_and_all_gather_concatenates_in_rank_order() {
        let g = Group::new(3);
        let results: Vec<(Vec<f32>, Vec<f32>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|r| {
                    let g = &g;
                    s.spawn(move || {
                        let mut buf = vec![r as f32, 10.0 * r as f32];
                        g.all_reduce_sum(r, &mut buf);
                        let gathered = g.all_gather(r, &vec![r as f32; r + 1]);
                        (buf, gathered)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (sum, gathered) in results {
            assert_eq!(sum, [3.0, 30.0]);
            assert_eq!(gathered, [0.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        }
    }
}
