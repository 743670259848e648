//! The block scheduler: chapter 4's continuous-batching loop, except that admission is decided by
//! free blocks instead of free slots, a running sequence takes a new block every `block_size`
//! tokens, and when the pool runs dry the youngest sequence is preempted and later recomputed.
//!
//! It is model-free: it sees token ids and counts, never tensors, so the same code drives the
//! CPU engine, the GPU engine of chapter 6 and the accounting run of a 7B model on an 80 GB GPU.

use crate::allocator::{BlockAllocator, BlockId};
use crate::block_table::blocks_for;
use crate::prefix::{block_hash, PrefixCacheStats};
use ch00_model::{ModelError, Result};
use std::collections::{HashMap, VecDeque};
use std::ops::Range;

// ANCHOR: config
/// How the pool is cut, how eagerly it is filled, and chapter 4's per-step limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub num_blocks: usize,
    /// Tokens per block (vLLM's default is 16).
    pub block_size: usize,
    /// Free blocks kept back when admitting, so that the sequences just admitted are not the
    /// first to be preempted when they need their next block (vLLM keeps 1% of the pool).
    pub watermark_blocks: usize,
    /// Share full blocks between requests with the same prefix.
    pub prefix_sharing: bool,
    /// Most sequences running at once (chapter 4's `max_running`, vLLM's `max_num_seqs`).
    pub max_running: usize,
    /// Most tokens one step may compute: each decode costs 1, each admission or recompute its
    /// uncached tokens (chapter 4's `max_tokens_per_step`, vLLM's `max_num_batched_tokens`).
    pub max_tokens_per_step: usize,
}
// ANCHOR_END: config

impl SchedulerConfig {
    /// `num_blocks` of `block_size` tokens with a 1% watermark, no prefix sharing, and no per-step
    /// limits: memory is the only limit. Engines set the limits (see `PagedEngine`).
    pub fn new(num_blocks: usize, block_size: usize) -> Self {
        SchedulerConfig {
            num_blocks,
            block_size,
            watermark_blocks: num_blocks / 100,
            prefix_sharing: false,
            max_running: usize::MAX,
            max_tokens_per_step: usize::MAX,
        }
    }
}

/// Tokens `start..start + len` of sequence `seq` are computed this step (a prefill or
/// recompute when `prefill`, else one decode token); its last token's logits pick the next token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    pub seq: usize,
    pub start: usize,
    pub len: usize,
    pub prefill: bool,
}

// ANCHOR: plan
/// What one step runs, who was preempted to make room, and which blocks must be copied first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub work: Vec<Work>,
    pub preempted: Vec<usize>,
    /// Copy-on-write: (src, dst) blocks to copy, in this order, before the step's forward pass
    /// (every layer's K and V of the whole block). A sample about to write into a block it
    /// shares with its siblings gets its own copy first.
    pub copies: Vec<(BlockId, BlockId)>,
}
// ANCHOR_END: plan

/// Counters for the whole run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerStats {
    pub preemptions: usize,
    pub peak_blocks_used: usize,
    pub peak_running: usize,
    /// Most blocks each sequence held at once.
    pub peak_blocks_per_seq: Vec<usize>,
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

/// One sequence as the scheduler sees it: tokens, block table and how much of it is cached.
#[derive(Debug, Clone, Default)]
struct SeqBlocks {
    tokens: Vec<u32>,
    table: Vec<BlockId>,
    /// Tokens whose K/V is (or is being, this step) written into `table`.
    computed: usize,
    /// Leading full blocks already named in the prefix cache, and the last one's name.
    hashed: usize,
    last_hash: u64,
    arrival_s: f64,
    finished: bool,
}

/// Continuous batching over a block pool.
#[derive(Debug, Clone)]
pub struct BlockScheduler {
    cfg: SchedulerConfig,
    alloc: BlockAllocator,
    seqs: Vec<SeqBlocks>,
    /// Groups admitted together, in arrival order: the `n` samples of a new request (they share
    /// its prompt), or one preempted sequence.
    waiting: VecDeque<Range<usize>>,
    /// In admission order: the last one is the youngest, the first to be preempted.
    running: Vec<usize>,
    pub stats: SchedulerStats,
}

impl BlockScheduler {
    pub fn new(cfg: SchedulerConfig) -> Result<Self> {
        if cfg.block_size == 0 {
            return Err(ModelError::InvalidSettings("block_size must be at least 1 token".into()));
        }
        if cfg.max_running == 0 || cfg.max_tokens_per_step == 0 {
            return Err(ModelError::InvalidSettings("max_running and max_tokens_per_step must be at least 1".into()));
        }
        Ok(BlockScheduler {
            cfg,
            alloc: BlockAllocator::new(cfg.num_blocks)?,
            seqs: Vec::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            stats: SchedulerStats::default(),
        })
    }

    pub fn config(&self) -> SchedulerConfig {
        self.cfg
    }

    /// Queues a request (its prompt) that arrives at `arrival_s` and may grow to `max_tokens`
    /// tokens; returns its index. A request that could not fit even with the whole pool to itself
    /// is refused, which is what guarantees that preemption always makes progress.
    pub fn submit(&mut self, prompt: &[u32], max_tokens: usize, arrival_s: f64) -> Result<usize> {
        Ok(self.submit_samples(prompt, max_tokens, arrival_s, 1)?.start)
    }

    /// Queues `n` samples of one prompt (parallel sampling); returns their indices. They are
    /// admitted together and share the prompt's blocks; each then grows on its own.
    pub fn submit_samples(&mut self, prompt: &[u32], max_tokens: usize, arrival_s: f64, n: usize) -> Result<Range<usize>> {
        let bad = |m: String| Err(ModelError::InvalidSettings(m));
        let most = max_tokens.max(prompt.len());
        // The longest sample alone, or all samples at admission (see `admit`), in an empty pool.
        let need = blocks_for(most, self.cfg.block_size).max(blocks_for(prompt.len(), self.cfg.block_size) + n.max(1) - 1);
        if prompt.is_empty() || need > self.cfg.num_blocks {
            let (bs, pool) = (self.cfg.block_size, self.cfg.num_blocks);
            return bad(format!("a request of up to {most} tokens and {n} samples needs {need} blocks of {bs}; the KV pool has {pool}"));
        }
        // A preempted sequence is recomputed in one step, so the whole of it must fit one; the
        // samples are admitted in one step, with one extra token each (see `admit`).
        let step = self.cfg.max_tokens_per_step;
        if most > step || prompt.len() + n.saturating_sub(1) > step || n == 0 || n > self.cfg.max_running {
            return bad(format!(
                "a request of up to {most} tokens and {n} samples does not fit max_tokens_per_step {step} and max_running {}",
                self.cfg.max_running
            ));
        }
        if !arrival_s.is_finite() {
            return bad(format!("arrival time {arrival_s}"));
        }
        let group = self.seqs.len()..self.seqs.len() + n;
        for _ in 0..n {
            self.seqs.push(SeqBlocks { tokens: prompt.to_vec(), arrival_s, ..SeqBlocks::default() });
            self.stats.peak_blocks_per_seq.push(0);
        }
        let at = self.waiting.partition_point(|g| self.seqs[g.start].arrival_s <= arrival_s);
        self.waiting.insert(at, group.clone());
        Ok(group)
    }

    // ANCHOR: schedule
    /// Plans the next step at time `now_s`: grow every running sequence by the blocks its next
    /// token needs, preempting the youngest when the pool is dry; then admit waiting requests
    /// that have arrived, oldest first, while their blocks fit and chapter 4's limits allow
    /// (`max_running` sequences, `max_tokens_per_step` tokens).
    pub fn schedule(&mut self, now_s: f64) -> Result<Plan> {
        let mut plan = Plan::default();
        for i in 0..self.running.len() {
            self.name_full_blocks(self.running[i]);
        }
        let mut i = 0;
        while i < self.running.len() {
            let s = self.running[i];
            if self.copy_on_write(s, &mut plan.copies)? && self.grow(s) {
                i += 1;
                continue;
            }
            // Out of blocks: free the most recently admitted sequence (maybe this one) and retry.
            let victim = self.running.pop().ok_or_else(|| stuck("nothing left to preempt"))?;
            let table = &self.seqs[victim].table;
            plan.copies.retain(|(_, dst)| !table.contains(dst)); // its copies are moot now
            self.preempt(victim)?;
            plan.preempted.push(victim);
        }
        // The step's token budget, less one decode token (or a longer chunk) per running sequence.
        let running_tokens: usize = self.running.iter().map(|&s| self.seqs[s].tokens.len() - self.seqs[s].computed).sum();
        let mut budget = self.cfg.max_tokens_per_step.saturating_sub(running_tokens);
        let mut admitted = Vec::new();
        while plan.preempted.is_empty() {
            let Some(group) = self.waiting.front().cloned() else { break };
            let ready = self.seqs[group.start].arrival_s <= now_s;
            let room = self.running.len() + group.len() <= self.cfg.max_running;
            let Some(tokens) = (ready && room).then(|| self.admit(group.clone(), budget)).flatten() else {
                break; // first come, first served: nobody overtakes the head of the queue
            };
            budget -= tokens;
            self.waiting.pop_front();
            self.running.extend(group.clone());
            admitted.extend(group);
        }
        for &s in &self.running {
            let seq = &mut self.seqs[s];
            let len = seq.tokens.len() - seq.computed;
            if len > 0 {
                plan.work.push(Work { seq: s, start: seq.computed, len, prefill: admitted.contains(&s) });
                seq.computed = seq.tokens.len();
            }
        }
        self.stats.cow_copies += plan.copies.len();
        self.record();
        Ok(plan)
    }

    /// Takes the blocks a running sequence needs for all its tokens; false if the pool ran dry.
    fn grow(&mut self, s: usize) -> bool {
        while self.seqs[s].table.len() < blocks_for(self.seqs[s].tokens.len(), self.cfg.block_size) {
            match self.alloc.allocate() {
                Some(b) => self.seqs[s].table.push(b),
                None => return false,
            }
        }
        true
    }

    /// Admits a group — one sequence, or the `n` samples of one prompt — if the blocks of its
    /// tokens (less those found in the prefix cache, plus one for each extra sample's first token)
    /// fit above the watermark and the tokens it must compute fit `budget`. Returns those tokens.
    fn admit(&mut self, group: Range<usize>, budget: usize) -> Option<usize> {
        let bs = self.cfg.block_size;
        let first = group.start;
        let n = self.seqs[first].tokens.len();
        // At least the last token is computed: its logits choose the next token.
        let (hits, last_hash) = if self.cfg.prefix_sharing {
            self.alloc.lookup(&self.seqs[first].tokens, bs, (n - 1) / bs)
        } else {
            (Vec::new(), 0)
        };
        // Samples beyond the first will each need a block of their own for their first token (a
        // copy of the shared last block, or a new one): admit them only if those are free too.
        let need = blocks_for(n, bs) - hits.len() + (group.len() - 1) + self.alloc.parked_among(&hits);
        let reserve = if self.running.is_empty() { 0 } else { self.cfg.watermark_blocks };
        let tokens = n - hits.len() * bs + (group.len() - 1);
        if self.alloc.num_free() < need + reserve || tokens > budget {
            return None;
        }
        if self.cfg.prefix_sharing {
            // Found by lookup, so in use or parked: cannot fail.
            let _ = self.alloc.take_hits(&hits, bs, n);
        }
        let seq = &mut self.seqs[first];
        seq.computed = hits.len() * bs;
        seq.hashed = hits.len();
        seq.last_hash = last_hash;
        seq.table = hits;
        if self.cfg.prefix_sharing {
            self.stats.prefix_query_tokens += n;
            self.stats.prefix_hit_tokens += seq.computed;
        }
        if !self.grow(first) {
            return None; // cannot happen: `need` blocks are free
        }
        self.fork(first, group.start + 1..group.end);
        Some(tokens)
    }
    // ANCHOR_END: schedule

    // ANCHOR: fork
    /// The other samples of a prompt take a reference on every block of the first one's table —
    /// the last, partly filled block too — instead of blocks of their own. Each computes only the
    /// prompt's last token again (the same token at the same position after the same prefix, so
    /// the same K/V the first sample writes there) to get its own row of logits to sample from.
    fn fork(&mut self, first: usize, others: Range<usize>) {
        let (table, hashed, last_hash) = {
            let f = &self.seqs[first];
            (f.table.clone(), f.hashed, f.last_hash)
        };
        for s in others {
            for &b in &table {
                let _ = self.alloc.share(b); // in use by `first`: cannot fail
            }
            let seq = &mut self.seqs[s];
            (seq.table, seq.hashed, seq.last_hash) = (table.clone(), hashed, last_hash);
            seq.computed = seq.tokens.len() - 1;
        }
    }
    // ANCHOR_END: fork

    // ANCHOR: cow
    /// Copy-on-write. If the block that receives `s`'s next token is shared (with the other
    /// samples of its prompt), `s` takes a fresh block and the step copies the shared one into it
    /// before the forward pass. The last owner finds the block its own and writes in place.
    /// False if the pool ran dry.
    fn copy_on_write(&mut self, s: usize, copies: &mut Vec<(BlockId, BlockId)>) -> Result<bool> {
        let i = self.seqs[s].computed / self.cfg.block_size;
        let Some(&shared) = self.seqs[s].table.get(i) else { return Ok(true) }; // a new block
        if self.alloc.ref_count(shared) == 1 {
            return Ok(true);
        }
        let Some(own) = self.alloc.allocate() else { return Ok(false) };
        self.alloc.release(shared)?; // its other owners keep it
        self.seqs[s].table[i] = own;
        copies.push((shared, own));
        Ok(true)
    }
    // ANCHOR_END: cow

    // ANCHOR: preempt
    /// Preemption by recompute: give back every block and put the sequence at the head of the
    /// queue. It keeps its tokens; when readmitted, its whole prefix is prefilled again.
    fn preempt(&mut self, s: usize) -> Result<()> {
        self.release_blocks(s)?;
        self.waiting.push_front(s..s + 1);
        self.stats.preemptions += 1;
        Ok(())
    }
    // ANCHOR_END: preempt

    fn release_blocks(&mut self, s: usize) -> Result<()> {
        let seq = &mut self.seqs[s];
        for b in seq.table.drain(..).rev() {
            self.alloc.release(b)?; // tail first: the LRU evicts a prefix's tail before its head
        }
        (seq.computed, seq.hashed, seq.last_hash) = (0, 0, 0);
        Ok(())
    }

    /// Names the full blocks of a sequence whose K/V has been written, so later requests can
    /// share them.
    fn name_full_blocks(&mut self, s: usize) {
        if !self.cfg.prefix_sharing {
            return;
        }
        let bs = self.cfg.block_size;
        let seq = &mut self.seqs[s];
        while seq.hashed < seq.computed / bs {
            let i = seq.hashed;
            seq.last_hash = block_hash(seq.last_hash, &seq.tokens[i * bs..(i + 1) * bs]);
            self.alloc.name(seq.last_hash, seq.table[i]);
            seq.hashed += 1;
        }
    }

    /// Records the token a running sequence just produced (its K/V is computed next step).
    pub fn append(&mut self, s: usize, token: u32) -> Result<()> {
        let seq =
            self.seqs.get_mut(s).filter(|q| !q.finished).ok_or_else(|| stuck(&format!("no live sequence {s}")))?;
        seq.tokens.push(token);
        Ok(())
    }

    /// The sequence is done: its blocks go back to the pool at once.
    pub fn finish(&mut self, s: usize) -> Result<()> {
        let pos =
            self.running.iter().position(|&r| r == s).ok_or_else(|| stuck(&format!("sequence {s} is not running")))?;
        self.running.remove(pos);
        self.name_full_blocks(s); // the blocks its last steps filled stay findable too
        self.release_blocks(s)?;
        self.seqs[s].finished = true;
        self.seqs[s].tokens = Vec::new(); // a long-running server must not keep every prompt
        Ok(())
    }

    // ANCHOR: abort
    /// The client went away: sequence `s` leaves the running batch or the queue, and its blocks
    /// go back to the pool at once (a block it shares stays with its other owners).
    pub fn abort(&mut self, s: usize) -> Result<()> {
        if self.seqs.get(s).is_none_or(|q| q.finished) {
            return Err(stuck(&format!("no live sequence {s}")));
        }
        if let Some(pos) = self.running.iter().position(|&r| r == s) {
            self.running.remove(pos);
        } else {
            let g = self.waiting.iter().position(|g| g.contains(&s)).ok_or_else(|| stuck(&format!("{s} is lost")))?;
            let group = self.waiting[g].clone();
            // A waiting group is a range; cutting one sample out may split it in two.
            let parts = [group.start..s, s + 1..group.end];
            self.waiting.remove(g);
            for part in parts.into_iter().rev().filter(|p| !p.is_empty()) {
                self.waiting.insert(g, part);
            }
        }
        self.release_blocks(s)?;
        self.seqs[s].finished = true;
        self.seqs[s].tokens = Vec::new(); // a long-running server must not keep every prompt
        Ok(())
    }
    // ANCHOR_END: abort

    fn record(&mut self) {
        let st = &mut self.stats;
        st.peak_blocks_used = st.peak_blocks_used.max(self.alloc.num_used());
        st.peak_running = st.peak_running.max(self.running.len());
        for &s in &self.running {
            st.peak_blocks_per_seq[s] = st.peak_blocks_per_seq[s].max(self.seqs[s].table.len());
        }
    }

    /// The block table of sequence `s` (empty while it waits).
    pub fn table(&self, s: usize) -> &[BlockId] {
        self.seqs.get(s).map_or(&[], |q| &q.table)
    }

    /// The tokens of sequence `s` as the scheduler knows them.
    pub fn tokens(&self, s: usize) -> &[u32] {
        self.seqs.get(s).map_or(&[], |q| &q.tokens)
    }

    pub fn blocks_used(&self) -> usize {
        self.alloc.num_used()
    }

    pub fn blocks_free(&self) -> usize {
        self.alloc.num_free()
    }

    pub fn ref_count(&self, b: BlockId) -> u32 {
        self.alloc.ref_count(b)
    }

    /// Prefix-cache hits and misses (tokens) and evictions (blocks).
    pub fn prefix_stats(&self) -> PrefixCacheStats {
        self.alloc.prefix_stats()
    }

    /// Tokens whose K/V sits in the pool, counting a shared block once (a shared block holds as
    /// many tokens as its fullest owner has written there).
    pub fn tokens_held(&self) -> usize {
        let bs = self.cfg.block_size;
        let mut total = 0;
        let mut shared: HashMap<BlockId, (usize, usize)> = HashMap::new(); // block -> (sum, max)
        for &s in &self.running {
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

    pub fn running(&self) -> &[usize] {
        &self.running
    }

    /// Sequences waiting (a request's samples count one each).
    pub fn num_waiting(&self) -> usize {
        self.waiting.iter().map(|g| g.len()).sum()
    }

    /// Arrival time of the first waiting request (the engine sleeps until then when idle).
    pub fn next_arrival(&self) -> Option<f64> {
        self.waiting.front().map(|g| self.seqs[g.start].arrival_s)
    }

    /// Nothing running and nothing waiting.
    pub fn is_done(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }
}

fn stuck(msg: &str) -> ModelError {
    ModelError::InvalidBatch(format!("block scheduler: {msg}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A request for [`drive`]: prompt, tokens to generate, arrival step, samples.
    type Req = (Vec<u32>, usize, u8, usize);

    /// Runs requests to completion with a fake model under which every sequence emits a token of
    /// its own (so samples diverge), one step per time unit, and returns the number of steps.
    /// After every step it checks the invariants and plays the runner on a shadow pool of token
    /// ids: the plan's copies first, then every work item's writes through its block table. Then
    /// every running sequence must read back exactly its own tokens through its table — which
    /// fails if a sample ever wrote into a block another one still reads (a missing copy).
    /// `aborts[r]`: the step at which request `r`'s client goes away (its samples still running
    /// or waiting are aborted then), if it does.
    fn drive(sched: &mut BlockScheduler, reqs: &[Req], aborts: &[Option<u8>]) -> std::result::Result<usize, TestCaseError> {
        let groups: Vec<Range<usize>> =
            reqs.iter().map(|(p, n, t, k)| sched.submit_samples(p, p.len() + n, *t as f64, *k).unwrap()).collect();
        let request_of = |s: usize| groups.iter().position(|g| g.contains(&s)).unwrap();
        let cfg = sched.config();
        let bs = cfg.block_size;
        let mut pool = vec![vec![None::<u32>; bs]; cfg.num_blocks];
        let n_seqs = groups.last().map_or(0, |g| g.end);
        let mut generated = vec![0usize; n_seqs];
        let mut finished = vec![0usize; n_seqs];
        let mut steps = 0;
        while !sched.is_done() {
            let now = steps as f64;
            for (r, g) in groups.iter().enumerate().filter(|&(r, _)| aborts.get(r).copied().flatten().is_some_and(|a| usize::from(a) == steps)) {
                let live: Vec<usize> = g.clone().filter(|&q| finished[q] == 0).collect();
                for q in live {
                    sched.abort(q).unwrap();
                    finished[q] += 1;
                    prop_assert!(sched.table(q).is_empty(), "an aborted sequence keeps blocks");
                }
                prop_assert!(sched.running().iter().all(|q| !g.contains(q)), "request {} still runs", r);
            }
            if sched.is_done() {
                break; // the aborts took the last of the work
            }
            let plan = sched.schedule(now).unwrap();
            if plan.work.is_empty() {
                // Only legitimate when nothing runs and the next request has not arrived yet.
                prop_assert!(sched.running().is_empty() && sched.next_arrival().is_some_and(|t| t > now), "deadlock");
            }
            check_invariants(sched)?;
            prop_assert!(sched.running().len() <= cfg.max_running);
            prop_assert!(plan.work.iter().map(|w| w.len).sum::<usize>() <= cfg.max_tokens_per_step);
            for &(src, dst) in &plan.copies {
                prop_assert_eq!(sched.ref_count(dst), 1, "a copy's destination belongs to one sequence");
                pool[dst] = pool[src].clone();
            }
            for w in &plan.work {
                let (table, tokens) = (sched.table(w.seq), sched.tokens(w.seq));
                if !w.prefill {
                    prop_assert_eq!(sched.ref_count(table[w.start / bs]), 1, "a decode writes into a shared block");
                }
                for pos in w.start..w.start + w.len {
                    pool[table[pos / bs]][pos % bs] = Some(tokens[pos]);
                }
            }
            for &s in sched.running() {
                let (table, tokens) = (sched.table(s), sched.tokens(s));
                for (pos, &t) in tokens.iter().enumerate() {
                    prop_assert_eq!(pool[table[pos / bs]][pos % bs], Some(t), "sequence {} position {}", s, pos);
                }
            }
            for w in &plan.work {
                let r = request_of(w.seq);
                prop_assert!(reqs[r].2 as f64 <= now, "admitted before its arrival");
                prop_assert_eq!(w.start + w.len, sched.tokens(w.seq).len());
                generated[w.seq] += 1;
                if generated[w.seq] == reqs[r].1 {
                    sched.finish(w.seq).unwrap();
                    finished[w.seq] += 1;
                } else {
                    sched.append(w.seq, 1000 + w.seq as u32).unwrap();
                }
            }
            steps += 1;
            prop_assert!(steps < 100_000);
        }
        prop_assert!(finished.iter().all(|&f| f == 1), "every sample finishes or is aborted exactly once: {:?}", finished);
        prop_assert_eq!(sched.blocks_used(), 0, "blocks leaked after every request finished");
        Ok(steps)
    }

    fn check_invariants(sched: &BlockScheduler) -> std::result::Result<(), TestCaseError> {
        let cfg = sched.config();
        let mut refs: HashMap<BlockId, u32> = HashMap::new();
        for &s in sched.running() {
            let t = sched.table(s);
            prop_assert!(t.len() >= blocks_for(sched.tokens(s).len(), cfg.block_size));
            for &b in t {
                *refs.entry(b).or_default() += 1;
            }
        }
        prop_assert_eq!(sched.blocks_used() + sched.blocks_free(), cfg.num_blocks);
        prop_assert_eq!(refs.len(), sched.blocks_used(), "a used block no table holds, or vice versa");
        for (&b, &n) in &refs {
            prop_assert_eq!(sched.ref_count(b), n, "ref count of block {} disagrees with the tables", b);
        }
        prop_assert!(sched.tokens_held() <= sched.blocks_used() * cfg.block_size);
        Ok(())
    }

    #[test]
    fn a_request_larger_than_the_pool_is_refused_and_block_size_zero_is_an_error() {
        let mut s = BlockScheduler::new(SchedulerConfig::new(4, 4)).unwrap();
        assert!(s.submit(&[1; 10], 17, 0.0).is_err());
        assert!(s.submit(&[], 4, 0.0).is_err());
        assert!(s.submit(&[1; 10], 16, 0.0).is_ok());
        assert!(BlockScheduler::new(SchedulerConfig::new(4, 0)).is_err());
        assert!(BlockScheduler::new(SchedulerConfig::new(0, 4)).is_err());
    }

    #[test]
    fn chapter_4_limits_cap_admission_with_blocks_to_spare() {
        let cfg = SchedulerConfig { max_running: 2, max_tokens_per_step: 10, ..SchedulerConfig::new(64, 4) };
        let mut s = BlockScheduler::new(cfg).unwrap();
        for _ in 0..3 {
            s.submit(&[1, 2, 3, 4], 8, 0.0).unwrap();
        }
        // Two of 4 tokens fit both limits; the third would be a third running sequence.
        let plan = s.schedule(0.0).unwrap();
        assert_eq!(plan.work.iter().map(|w| w.len).collect::<Vec<_>>(), vec![4, 4]);
        assert_eq!(s.num_waiting(), 1);
        // A request whose whole sequence could not be recomputed in one step is refused.
        assert!(s.submit(&[1; 4], 11, 0.0).is_err());
        let cfg = SchedulerConfig { max_tokens_per_step: 9, ..SchedulerConfig::new(64, 4) };
        let mut s = BlockScheduler::new(cfg).unwrap();
        for _ in 0..3 {
            s.submit(&[1, 2, 3, 4], 8, 0.0).unwrap();
        }
        // 4 + 4 tokens fit 9; the third prompt waits for the next step (2 decodes + 4 <= 9).
        assert_eq!(s.schedule(0.0).unwrap().work.len(), 2);
        s.append(0, 5).unwrap();
        s.append(1, 5).unwrap();
        assert_eq!(s.schedule(0.0).unwrap().work.iter().map(|w| w.len).sum::<usize>(), 6);
        assert!(BlockScheduler::new(SchedulerConfig { max_running: 0, ..SchedulerConfig::new(4, 4) }).is_err());
    }

    #[test]
    fn samples_share_the_prompt_and_copy_the_partly_filled_block_on_write() {
        let mut s = BlockScheduler::new(SchedulerConfig::new(16, 4)).unwrap();
        let samples = s.submit_samples(&[1, 2, 3, 4, 5, 6], 12, 0.0, 3).unwrap();
        // One prompt in 2 blocks for 3 samples: the first computes it, the others its last token.
        let plan = s.schedule(0.0).unwrap();
        let work = |seq, start, len| Work { seq, start, len, prefill: true };
        assert_eq!(plan.work, vec![work(0, 0, 6), work(1, 5, 1), work(2, 5, 1)]);
        assert!(plan.copies.is_empty());
        assert!(samples.clone().all(|i| s.table(i) == [0, 1]));
        assert_eq!((s.blocks_used(), s.ref_count(1), s.tokens_held()), (2, 3, 6));
        // Each sample's first token goes to position 6, in the half-full shared block 1: samples 0
        // and 1 copy it first; sample 2, by then its only owner, writes in place.
        for i in samples.clone() {
            s.append(i, 10 + i as u32).unwrap();
        }
        let plan = s.schedule(0.0).unwrap();
        assert_eq!(plan.copies, vec![(1, 2), (1, 3)]);
        assert_eq!(samples.map(|i| s.table(i).to_vec()).collect::<Vec<_>>(), vec![vec![0, 2], vec![0, 3], vec![0, 1]]);
        // The full block stays shared, once in memory; each sample holds 3 tokens of its own.
        assert_eq!((s.ref_count(0), s.blocks_used(), s.tokens_held()), (3, 4, 4 + 3 * 3));
        assert_eq!(s.stats.cow_copies, 2);

        // A prompt that fills its blocks: nothing to copy, each sample opens a new block.
        let mut s = BlockScheduler::new(SchedulerConfig::new(16, 4)).unwrap();
        let samples = s.submit_samples(&[1, 2, 3, 4], 12, 0.0, 2).unwrap();
        s.schedule(0.0).unwrap();
        samples.clone().for_each(|i| s.append(i, 9).unwrap());
        assert!(s.schedule(0.0).unwrap().copies.is_empty());
        assert_eq!((s.table(0), s.table(1)), (&[0, 1][..], &[0, 2][..]));
        // More samples than may run at once is refused, not queued forever.
        let cfg = SchedulerConfig { max_running: 2, ..SchedulerConfig::new(16, 4) };
        assert!(BlockScheduler::new(cfg).unwrap().submit_samples(&[1], 4, 0.0, 3).is_err());
    }

    #[test]
    fn a_tiny_pool_forces_preemption_and_everyone_still_finishes() {
        let mut s = BlockScheduler::new(SchedulerConfig::new(4, 2)).unwrap();
        let reqs: Vec<_> = (0..3).map(|i| (vec![1, 2, i], 4, 0, 1)).collect();
        drive(&mut s, &reqs, &[]).unwrap();
        assert!(s.stats.preemptions > 0);
        assert_eq!(s.stats.peak_blocks_used, 4);
    }

    #[test]
    fn blocks_are_taken_every_block_size_tokens() {
        let mut s = BlockScheduler::new(SchedulerConfig::new(8, 4)).unwrap();
        let a = s.submit(&[1, 2, 3], 12, 0.0).unwrap();
        let plan = s.schedule(0.0).unwrap();
        assert_eq!(plan.work, vec![Work { seq: a, start: 0, len: 3, prefill: true }]);
        assert_eq!(s.table(a).len(), 1);
        s.append(a, 9).unwrap(); // token 4 fits block 0
        s.schedule(0.0).unwrap();
        assert_eq!(s.table(a).len(), 1);
        s.append(a, 9).unwrap(); // token 5 opens block 1
        let plan = s.schedule(0.0).unwrap();
        assert_eq!(plan.work, vec![Work { seq: a, start: 4, len: 1, prefill: false }]);
        assert_eq!((s.table(a).len(), s.tokens_held()), (2, 5));
    }

    #[test]
    fn a_shared_system_prompt_is_stored_once() {
        let cfg = SchedulerConfig { prefix_sharing: true, ..SchedulerConfig::new(16, 4) };
        let mut s = BlockScheduler::new(cfg).unwrap();
        let system = [5u32, 6, 7, 8, 9, 10, 11, 12];
        let a = s.submit(&[&system[..], &[1, 2]].concat(), 16, 0.0).unwrap();
        s.schedule(0.0).unwrap(); // a's prefill writes its blocks
        s.append(a, 3).unwrap();
        let b = s.submit(&[&system[..], &[4]].concat(), 16, 0.0).unwrap();
        let plan = s.schedule(0.0).unwrap();
        assert_eq!(plan.work[1], Work { seq: b, start: 8, len: 1, prefill: true });
        assert_eq!(&s.table(b)[..2], &s.table(a)[..2]);
        assert_eq!(s.ref_count(s.table(a)[0]), 2);
        assert_eq!(s.blocks_used(), 4); // a: 2 shared + 1; b: 1 of its own
        assert_eq!(s.tokens_held(), 11 + 9 - 8);
        assert_eq!((s.stats.prefix_hit_tokens, s.stats.prefix_query_tokens), (8, 19));
    }

    fn workload() -> impl Strategy<Value = Vec<Req>> {
        // Prompts share prefixes often (tokens from a tiny alphabet) so prefix sharing is exercised;
        // arrivals are spread over the first 20 steps, in any order; up to 3 samples per prompt.
        let prompt = proptest::collection::vec(0u32..2, 1..12);
        proptest::collection::vec((prompt, 1usize..12, 0u8..20, 1usize..4), 1..12)
    }

    proptest! {
        /// Any workload, any arrival order, any number of samples per prompt, any pool that fits
        /// the largest request, with or without prefix sharing, under any per-step limits: no
        /// deadlock, every sample finishes exactly once, no step breaks a limit, ref counts match
        /// the tables after every step, copy-on-write keeps every sequence's tokens its own,
        /// clients that go away (aborts, running or waiting) give every block back, and nothing
        /// leaks at the end.
        #[test]
        fn scheduler_invariants_hold(
            reqs in workload(),
            bs in 1usize..6,
            extra in 0usize..8,
            share: bool,
            wm in 0usize..3,
            max_running in 3usize..9,
            extra_tokens in 0usize..16,
            aborts in proptest::collection::vec(proptest::option::weighted(0.3, 0u8..30), 12),
        ) {
            let need = |(p, n, _, k): &Req| blocks_for(p.len() + n, bs).max(blocks_for(p.len(), bs) + k - 1);
            let largest = reqs.iter().map(need).max().unwrap();
            let longest = reqs.iter().map(|(p, n, _, k)| (p.len() + n).max(p.len() + k - 1)).max().unwrap();
            let cfg = SchedulerConfig {
                watermark_blocks: wm,
                prefix_sharing: share,
                max_running,
                max_tokens_per_step: longest + extra_tokens,
                ..SchedulerConfig::new(largest + extra, bs)
            };
            let mut s = BlockScheduler::new(cfg).unwrap();
            drive(&mut s, &reqs, &aborts)?;
        }
    }
}
