//! The block scheduler's counters: scalars for the whole run (never a list per step or per
//! sequence), and the KV tokens the pool holds right now.

use super::BlockScheduler;
use crate::block_table::BlockId;
use std::collections::HashMap;

/// Counters for the whole run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerStats {
    pub preemptions: usize,
    pub peak_blocks_used: usize,
    pub peak_running: usize,
    /// Prefix tokens looked up in the prefix cache at admission (prompt, plus generated tokens
    /// for a readmitted sequence), and those found there.
    pub prefix_query_tokens: usize,
    pub prefix_hit_tokens: usize,
    /// Blocks copied on write (parallel sampling).
    pub cow_copies: usize,
}

impl SchedulerStats {
    /// Share of admitted prompt tokens whose K/V was found in the prefix cache.
    pub fn prefix_hit_rate(&self) -> f64 {
        self.prefix_hit_tokens as f64 / self.prefix_query_tokens.max(1) as f64
    }
}

impl BlockScheduler {
    /// Books the peaks after a step is planned.
    pub(super) fn record(&mut self) {
        let st = &mut self.stats;
        st.peak_blocks_used = st.peak_blocks_used.max(self.alloc.num_used());
        st.peak_running = st.peak_running.max(self.running.len());
    }

    /// Tokens whose K/V sits in the pool, counting a shared block once (a shared block holds as
    /// many tokens as its fullest owner has written there).
    pub fn tokens_held(&self) -> usize {
        let bs = self.cfg.block_size;
        let mut total = 0;
        let mut shared: HashMap<BlockId, (usize, usize)> = HashMap::new(); // block -> (sum, max)
        for s in &self.running {
            let seq = &self.seqs[s];
            total += seq.computed;
            for (i, &b) in seq.table.iter().enumerate().filter(|&(_, &b)| self.alloc.ref_count(b) > 1) {
                let t = seq.computed.saturating_sub(i * bs).min(bs);
                let e = shared.entry(b).or_default();
                *e = (e.0 + t, e.1.max(t));
            }
        }
        total - shared.values().map(|&(sum, max)| sum - max).sum::<usize>()
    }
}
