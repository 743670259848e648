//! The block scheduler: chapter 4's continuous-batching loop, except that admission is decided by
//! free blocks instead of free slots, a running sequence takes a new block every `block_size`
//! tokens, and when the pool runs dry the youngest sequence is preempted and later recomputed.
//!
//! It is model-free: it sees sequence ids and counts, never tensors, and borrows tokens from the
//! engine's table only to name full blocks for the prefix cache; so the same code drives the CPU
//! engine, the GPU engine of chapter 6 and the accounting run of a 7B model on an 80 GB GPU.
//! This file is admission, growth and preemption; `chunks` is chunked prefill's split of the
//! step's token budget, `samples` parallel sampling (fork and copy-on-write), `stats` the run's
//! counters.

mod chunks;
mod samples;
mod stats;
#[cfg(test)]
mod tests;

pub use chunks::chunk_shares;
pub use stats::SchedulerStats;

use crate::allocator::BlockAllocator;
use crate::block_table::BlockId;
use crate::block_table::blocks_for;
use crate::prefix::{block_hash, PrefixCacheStats};
use ch00_model::{ModelError, Result};
use ch00_serving::{SeqId, TokenSource};
use std::collections::{BTreeMap, VecDeque};

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
    /// uncached tokens, or with chunked prefill the chunk it gets (chapter 4's
    /// `max_tokens_per_step`, vLLM's `max_num_batched_tokens`).
    pub max_tokens_per_step: usize,
    /// Chunked prefill: the running decodes take the step's budget first, and prompts (and
    /// preempted sequences' recomputes) fill what is left in chunks, one prompt spanning several
    /// steps, so no decode waits for a whole long prompt (vLLM V1's scheduler).
    pub chunked_prefill: bool,
    /// With chunked prefill: most sequences partly prefilled at once (vLLM's
    /// `max_num_partial_prefills`).
    pub max_partial_prefills: usize,
    /// With chunked prefill: most tokens one sequence's chunk may take in a step, so one long
    /// prompt cannot take the whole budget from the prompts behind it (vLLM's
    /// `long_prefill_token_threshold`).
    pub max_chunk_tokens: usize,
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
            chunked_prefill: false,
            max_partial_prefills: 1,
            max_chunk_tokens: usize::MAX,
        }
    }
}

/// Tokens `start..start + len` of sequence `seq` are computed this step (a prefill or
/// recompute when `prefill`, else one decode token); its last token's logits pick the next token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    pub seq: SeqId,
    pub start: usize,
    pub len: usize,
    pub prefill: bool,
}

// ANCHOR: plan
/// What one step runs, who was preempted to make room, and which blocks must be copied first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub work: Vec<Work>,
    pub preempted: Vec<SeqId>,
    /// Copy-on-write: (src, dst) blocks to copy, in this order, before the step's forward pass
    /// (every layer's K and V of the whole block). A sample about to write into a block it
    /// shares with its siblings gets its own copy first.
    pub copies: Vec<(BlockId, BlockId)>,
}
// ANCHOR_END: plan

// ANCHOR: seq_blocks
/// One sequence as the scheduler sees it: its block table and how much of it is cached (its
/// tokens live in the engine's table, one owner).
#[derive(Debug, Clone, Default)]
struct SeqBlocks {
    table: Vec<BlockId>,
    /// Tokens whose K/V is (or is being, this step) written into `table`.
    computed: usize,
    /// Leading full blocks already named in the prefix cache, and the last one's name.
    hashed: usize,
    last_hash: u64,
    arrival_s: f64,
    /// Admitted (or readmitted) and its prompt not yet all computed: its first token is still to
    /// be sampled.
    prefilling: bool,
}
// ANCHOR_END: seq_blocks

/// Continuous batching over a block pool.
#[derive(Debug, Clone)]
pub struct BlockScheduler {
    cfg: SchedulerConfig,
    alloc: BlockAllocator,
    /// Sequences running or waiting; an entry leaves when its sequence finishes or is aborted.
    seqs: BTreeMap<SeqId, SeqBlocks>,
    /// Groups admitted together, in arrival order: the `n` samples of a new request (they share
    /// its prompt), or one preempted sequence.
    waiting: VecDeque<Vec<SeqId>>,
    /// In admission order: the last one is the youngest, the first to be preempted.
    running: Vec<SeqId>,
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
        if cfg.chunked_prefill && (cfg.max_partial_prefills == 0 || cfg.max_chunk_tokens == 0) {
            return Err(ModelError::InvalidSettings("max_partial_prefills and max_chunk_tokens must be at least 1".into()));
        }
        Ok(BlockScheduler {
            cfg,
            alloc: BlockAllocator::new(cfg.num_blocks)?,
            seqs: BTreeMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            stats: SchedulerStats::default(),
        })
    }

    pub fn config(&self) -> SchedulerConfig {
        self.cfg
    }

    /// Queues the samples `group` of one prompt of `prompt_len` tokens (one id for a lone
    /// request), arriving at `arrival_s`, each growing to at most `max_tokens` tokens. They are
    /// admitted together and share the prompt's blocks; each then grows on its own. A request
    /// that could not fit even with the whole pool to itself is refused, which is what
    /// guarantees that preemption always makes progress.
    pub fn submit(&mut self, group: &[SeqId], prompt_len: usize, max_tokens: usize, arrival_s: f64) -> Result<()> {
        let bad = |m: String| Err(ModelError::InvalidSettings(m));
        let n = group.len();
        let most = max_tokens.max(prompt_len);
        // The longest sample alone, or all samples at admission (see `admit`), in an empty pool.
        let need = blocks_for(most, self.cfg.block_size).max(blocks_for(prompt_len, self.cfg.block_size) + n.max(1) - 1);
        if prompt_len == 0 || need > self.cfg.num_blocks {
            let (bs, pool) = (self.cfg.block_size, self.cfg.num_blocks);
            return bad(format!("a request of up to {most} tokens and {n} samples needs {need} blocks of {bs}; the KV pool has {pool}"));
        }
        // Without chunked prefill a preempted sequence is recomputed in one step, so the whole of
        // it must fit one; the samples of a prompt are admitted in one step, with one extra token
        // each (see `admit`), chunked prefill or not.
        let step = self.cfg.max_tokens_per_step;
        let recompute = if self.cfg.chunked_prefill { 0 } else { most };
        let together = if n > 1 { prompt_len + n - 1 } else { 0 };
        if recompute > step || together > step || n == 0 || n > self.cfg.max_running {
            return bad(format!(
                "a request of up to {most} tokens and {n} samples does not fit max_tokens_per_step {step} and max_running {}",
                self.cfg.max_running
            ));
        }
        if !arrival_s.is_finite() {
            return bad(format!("arrival time {arrival_s}"));
        }
        if let Some(s) = group.iter().find(|s| self.seqs.contains_key(s)) {
            return bad(format!("{s} is already queued"));
        }
        for &s in group {
            self.seqs.insert(s, SeqBlocks { arrival_s, ..SeqBlocks::default() });
        }
        let at = self.waiting.partition_point(|g| self.seqs[&g[0]].arrival_s <= arrival_s);
        self.waiting.insert(at, group.to_vec());
        Ok(())
    }

    // ANCHOR: schedule
    /// Plans the next step at time `now_s`, reading each sequence's tokens from `seqs`: grow
    /// every running sequence by the blocks its next token needs, preempting the youngest when
    /// the pool is dry; then admit waiting requests that have arrived, oldest first, while their
    /// blocks fit and chapter 4's limits allow (`max_running` sequences, `max_tokens_per_step`
    /// tokens).
    pub fn schedule(&mut self, seqs: &dyn TokenSource, now_s: f64) -> Result<Plan> {
        let mut plan = Plan::default();
        for i in 0..self.running.len() {
            let s = self.running[i];
            self.name_full_blocks(s, seqs.tokens(s));
        }
        // What each running sequence computes this step (its newest token, or a chunk).
        let mut want = self.shares(seqs);
        let mut i = 0;
        while i < self.running.len() {
            let s = self.running[i];
            let upto = self.seqs[&s].computed + want[&s];
            if want[&s] == 0 || (self.copy_on_write(s, &mut plan.copies)? && self.grow(s, upto)?) {
                i += 1;
                continue;
            }
            // Out of blocks: free the most recently admitted sequence (maybe this one) and retry.
            let victim = self.running.pop().ok_or_else(|| stuck("nothing left to preempt"))?;
            let table = &self.seqs[&victim].table;
            plan.copies.retain(|(_, dst)| !table.contains(dst)); // its copies are moot now
            self.preempt(victim)?;
            want.remove(&victim);
            plan.preempted.push(victim);
        }
        // The step's token budget, less what the running sequences take.
        let mut budget = self.cfg.max_tokens_per_step.saturating_sub(want.values().sum());
        let mut partial = self.running.iter().filter(|s| self.seqs[s].computed + want[s] < seqs.tokens(**s).len()).count();
        while plan.preempted.is_empty() {
            let Some(group) = self.waiting.front().cloned() else { break };
            let ready = self.seqs[&group[0]].arrival_s <= now_s;
            let room = self.running.len() + group.len() <= self.cfg.max_running;
            let admitted = (ready && room).then(|| self.admit(&group, seqs.tokens(group[0]), budget, partial)).flatten();
            let Some(chunk) = admitted else {
                break; // first come, first served: nobody overtakes the head of the queue
            };
            budget -= chunk + group.len() - 1;
            partial += usize::from(self.seqs[&group[0]].computed + chunk < seqs.tokens(group[0]).len());
            want.insert(group[0], chunk);
            for &s in &group[1..] {
                want.insert(s, 1); // each other sample computes the prompt's last token again
            }
            self.waiting.pop_front();
            self.running.extend(&group);
        }
        for &s in &self.running {
            let len = seqs.tokens(s).len();
            let seq = self.seqs.get_mut(&s).ok_or_else(|| stuck("a running sequence has no entry"))?;
            let n = want.get(&s).copied().unwrap_or(0);
            if n > 0 {
                plan.work.push(Work { seq: s, start: seq.computed, len: n, prefill: seq.prefilling });
                seq.computed += n;
                seq.prefilling &= seq.computed < len;
            }
        }
        self.stats.cow_copies += plan.copies.len();
        self.record();
        Ok(plan)
    }

    /// How many tokens each running sequence computes this step (see [`chunk_shares`]).
    fn shares(&self, seqs: &dyn TokenSource) -> BTreeMap<SeqId, usize> {
        let uncomputed = |s: SeqId| seqs.tokens(s).len().saturating_sub(self.seqs[&s].computed);
        if !self.cfg.chunked_prefill {
            // Each running sequence computes all it has not: its newest token.
            return self.running.iter().map(|&s| (s, uncomputed(s))).collect();
        }
        let running: Vec<(usize, bool)> = self.running.iter().map(|&s| (uncomputed(s), self.seqs[&s].prefilling)).collect();
        let shares = chunk_shares(&running, self.cfg.max_tokens_per_step, self.cfg.max_chunk_tokens);
        self.running.iter().copied().zip(shares).collect()
    }

    /// Takes the blocks a running sequence needs for all its `len` tokens; false if the pool ran dry.
    fn grow(&mut self, s: SeqId, len: usize) -> Result<bool> {
        let seq = self.seqs.get_mut(&s).ok_or_else(|| stuck(&format!("no {s}")))?;
        while seq.table.len() < blocks_for(len, self.cfg.block_size) {
            match self.alloc.allocate() {
                Some(b) => seq.table.push(b),
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Admits a group — one sequence, or the `n` samples of one prompt, `tokens` — if the blocks
    /// of the tokens it computes now (less those found in the prefix cache, plus one for each
    /// extra sample's first token) fit above the watermark and those tokens fit `budget`. Returns
    /// the first sequence's share: its whole uncached prompt, or with chunked prefill the chunk
    /// the budget allows (a lone sequence only, and a new partial prefill only while fewer than
    /// `max_partial_prefills` are under way, `partial`).
    fn admit(&mut self, group: &[SeqId], tokens: &[u32], budget: usize, partial: usize) -> Option<usize> {
        let bs = self.cfg.block_size;
        let first = group[0];
        let n = tokens.len();
        // At least the last token is computed: its logits choose the next token.
        let (hits, last_hash) = if self.cfg.prefix_sharing {
            self.alloc.lookup(tokens, bs, (n - 1) / bs)
        } else {
            (Vec::new(), 0)
        };
        let cached = hits.len() * bs;
        let chunk = match self.cfg.chunked_prefill && group.len() == 1 {
            true => (n - cached).min(budget).min(self.cfg.max_chunk_tokens),
            false => n - cached,
        };
        if chunk == 0 || (chunk < n - cached && partial >= self.cfg.max_partial_prefills) {
            return None;
        }
        // Samples beyond the first will each need a block of their own for their first token (a
        // copy of the shared last block, or a new one): admit them only if those are free too.
        let need = blocks_for(cached + chunk, bs) - hits.len() + (group.len() - 1) + self.alloc.parked_among(&hits);
        let reserve = if self.running.is_empty() { 0 } else { self.cfg.watermark_blocks };
        if self.alloc.num_free() < need + reserve || chunk + group.len() - 1 > budget {
            return None;
        }
        if self.cfg.prefix_sharing {
            // Found by lookup, so in use or parked: cannot fail.
            let _ = self.alloc.take_hits(&hits, bs, n);
            self.stats.prefix_query_tokens += n;
            self.stats.prefix_hit_tokens += cached;
        }
        let seq = self.seqs.get_mut(&first)?;
        seq.computed = cached;
        seq.hashed = hits.len();
        seq.last_hash = last_hash;
        seq.table = hits;
        seq.prefilling = true;
        if !self.grow(first, cached + chunk).ok()? {
            return None; // cannot happen: `need` blocks are free
        }
        self.fork(first, &group[1..], n);
        Some(chunk)
    }
    // ANCHOR_END: schedule

    // ANCHOR: preempt
    /// Preemption by recompute: give back every block and put the sequence at the head of the
    /// queue. Its tokens stay in the engine's table; when readmitted, its whole prefix is
    /// prefilled again.
    fn preempt(&mut self, s: SeqId) -> Result<()> {
        self.release_blocks(s)?;
        self.waiting.push_front(vec![s]);
        self.stats.preemptions += 1;
        Ok(())
    }
    // ANCHOR_END: preempt

    fn release_blocks(&mut self, s: SeqId) -> Result<()> {
        let seq = self.seqs.get_mut(&s).ok_or_else(|| stuck(&format!("no {s}")))?;
        for b in seq.table.drain(..).rev() {
            self.alloc.release(b)?; // tail first: the LRU evicts a prefix's tail before its head
        }
        (seq.computed, seq.hashed, seq.last_hash, seq.prefilling) = (0, 0, 0, false);
        Ok(())
    }

    /// Names the full blocks of a sequence whose K/V has been written, so later requests can
    /// share them.
    fn name_full_blocks(&mut self, s: SeqId, tokens: &[u32]) {
        if !self.cfg.prefix_sharing {
            return;
        }
        let bs = self.cfg.block_size;
        let Some(seq) = self.seqs.get_mut(&s) else { return };
        while seq.hashed < seq.computed.min(tokens.len()) / bs {
            let i = seq.hashed;
            seq.last_hash = block_hash(seq.last_hash, &tokens[i * bs..(i + 1) * bs]);
            self.alloc.name(seq.last_hash, seq.table[i]);
            seq.hashed += 1;
        }
    }

    /// The sequence is done (`tokens`: all of it): its blocks go back to the pool at once, its
    /// full ones named for the prefix cache, and it is forgotten.
    pub fn finish(&mut self, s: SeqId, tokens: &[u32]) -> Result<()> {
        let pos = self.running.iter().position(|&r| r == s).ok_or_else(|| stuck(&format!("{s} is not running")))?;
        self.running.remove(pos);
        self.name_full_blocks(s, tokens); // the blocks its last steps filled stay findable too
        self.release_blocks(s)?;
        self.seqs.remove(&s);
        Ok(())
    }

    // ANCHOR: abort
    /// The client went away: sequence `s` leaves the running batch or the queue, and its blocks
    /// go back to the pool at once (a block it shares stays with its other owners).
    pub fn abort(&mut self, s: SeqId) -> Result<()> {
        if !self.seqs.contains_key(&s) {
            return Err(stuck(&format!("no live {s}")));
        }
        if let Some(pos) = self.running.iter().position(|&r| r == s) {
            self.running.remove(pos);
        } else {
            let g = self.waiting.iter().position(|g| g.contains(&s)).ok_or_else(|| stuck(&format!("{s} is lost")))?;
            self.waiting[g].retain(|&q| q != s);
            if self.waiting[g].is_empty() {
                self.waiting.remove(g);
            }
        }
        self.release_blocks(s)?;
        self.seqs.remove(&s);
        Ok(())
    }
    // ANCHOR_END: abort

    /// The block table of sequence `s` (empty while it waits).
    pub fn table(&self, s: SeqId) -> &[BlockId] {
        self.seqs.get(&s).map_or(&[], |q| &q.table)
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

    pub fn running(&self) -> &[SeqId] {
        &self.running
    }

    /// Sequences waiting (a request's samples count one each).
    pub fn num_waiting(&self) -> usize {
        self.waiting.iter().map(|g| g.len()).sum()
    }

    /// Sequences the scheduler holds an entry for (running or waiting): bounded by what is in
    /// flight, whatever has finished before.
    pub fn num_sequences(&self) -> usize {
        self.seqs.len()
    }

    /// Arrival time of the first waiting request (the engine sleeps until then when idle).
    pub fn next_arrival(&self) -> Option<f64> {
        self.waiting.front().map(|g| self.seqs[&g[0]].arrival_s)
    }

    /// Nothing running and nothing waiting.
    pub fn is_done(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }
}

fn stuck(msg: &str) -> ModelError {
    ModelError::InvalidBatch(format!("block scheduler: {msg}"))
}
