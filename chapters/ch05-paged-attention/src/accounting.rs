//! Capacity accounting without a model: drive chapter 4's slot scheduler and this chapter's block
//! scheduler with simulated token counts and record, step by step, how many requests run, how
//! much KV memory is reserved for them and how much of it holds real tokens. Because neither
//! scheduler looks at a tensor, this is exactly what the engines would do on the same workload,
//! at any model size: a 7B model on an 80 GB GPU costs a few milliseconds to account for.

use crate::scheduler::{BlockScheduler, SchedulerConfig};
use ch00_model::{ModelError, Result};
use ch00_serving::{Phase, Request, SeqId, TraceStep};
use std::collections::BTreeMap;
use ch04_continuous_batching::{Pending, Scheduler, SchedulerConfig as SlotConfig};

/// KV memory in one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemStep {
    /// Requests that computed tokens in the step.
    pub running: usize,
    /// Bytes set aside for the running requests (slots × max length, or blocks in use).
    pub reserved_bytes: u64,
    /// Bytes of those holding a real token's K and V.
    pub used_bytes: u64,
    /// Requests were left waiting after the step was planned: memory, not demand, was the limit.
    pub queued: bool,
}

/// A run seen as KV memory over steps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemSeries {
    pub steps: Vec<MemStep>,
    pub preemptions: usize,
    pub generated_tokens: usize,
    /// Share of admitted prompt tokens found in the prefix cache (0 without prefix sharing).
    pub prefix_hit_rate: f64,
    /// Blocks copied on write (parallel sampling).
    pub cow_copies: usize,
}

impl MemSeries {
    pub fn peak_running(&self) -> usize {
        self.steps.iter().map(|s| s.running).max().unwrap_or(0)
    }

    pub fn mean_running(&self) -> f64 {
        self.mean(|s| s.running as f64)
    }

    /// Mean running requests over the steps that left requests waiting: how many requests the
    /// memory holds while demand exceeds it (the drain at the end, with its few long requests,
    /// is left out).
    pub fn mean_running_queued(&self) -> f64 {
        let queued: Vec<f64> = self.steps.iter().filter(|s| s.queued).map(|s| s.running as f64).collect();
        if queued.is_empty() {
            return 0.0; // nobody ever waited (an empty f64 sum is -0.0)
        }
        queued.iter().sum::<f64>() / queued.len() as f64
    }

    pub fn mean_reserved_bytes(&self) -> f64 {
        self.mean(|s| s.reserved_bytes as f64)
    }

    pub fn mean_used_bytes(&self) -> f64 {
        self.mean(|s| s.used_bytes as f64)
    }

    pub fn peak_used_bytes(&self) -> u64 {
        self.steps.iter().map(|s| s.used_bytes).max().unwrap_or(0)
    }

    pub fn peak_reserved_bytes(&self) -> u64 {
        self.steps.iter().map(|s| s.reserved_bytes).max().unwrap_or(0)
    }

    // ANCHOR: waste
    /// Share of the reserved KV memory that held no token, over the whole run:
    /// 1 − Σ used / Σ reserved (each step weighs the same).
    pub fn waste_pct(&self) -> f64 {
        let reserved: f64 = self.steps.iter().map(|s| s.reserved_bytes as f64).sum();
        let used: f64 = self.steps.iter().map(|s| s.used_bytes as f64).sum();
        if reserved == 0.0 {
            0.0
        } else {
            100.0 * (1.0 - used / reserved)
        }
    }
    // ANCHOR_END: waste

    fn mean(&self, f: impl Fn(&MemStep) -> f64) -> f64 {
        self.steps.iter().map(f).sum::<f64>() / self.steps.len().max(1) as f64
    }

    /// The series of an engine's trace. Contiguous engines reserve `slot_bytes` per running
    /// request (`Some`); the paged engine's trace already says the bytes of its blocks in use.
    /// A step is queued while some request has not yet appeared, or was preempted (the trace
    /// says at which step) and has not yet come back.
    pub fn from_trace(trace: &[TraceStep], slot_bytes: Option<u64>, generated: usize) -> Self {
        let mut queued = vec![false; trace.len()];
        let mut mark = |from: usize, to: usize| queued.iter_mut().take(to).skip(from).for_each(|q| *q = true);
        // Steps in which each request ran.
        let mut ran: std::collections::HashMap<u64, Vec<usize>> = std::collections::HashMap::new();
        for (i, t) in trace.iter().enumerate() {
            for e in t.entries.iter().filter(|e| e.phase != Phase::Padding) {
                ran.entry(e.request).or_default().push(i);
            }
        }
        for steps in ran.values() {
            mark(0, steps[0]);
        }
        let preempted: Vec<(usize, u64)> =
            trace.iter().enumerate().flat_map(|(i, t)| t.preempted.iter().map(move |&id| (i, id))).collect();
        for &(p, id) in &preempted {
            let back = ran.get(&id).and_then(|s| s.iter().find(|&&i| i > p).copied()).unwrap_or(trace.len());
            mark(p, back);
        }
        let steps = trace
            .iter()
            .zip(queued)
            .map(|(t, queued)| {
                let running = t.entries.iter().filter(|e| e.phase != Phase::Padding).count();
                let reserved_bytes = slot_bytes.map_or(t.kv_bytes_allocated, |b| t.entries.len() as u64 * b);
                MemStep { running, reserved_bytes, used_bytes: t.kv_bytes_used, queued }
            })
            .collect();
        let preemptions = preempted.len();
        MemSeries { steps, preemptions, generated_tokens: generated, ..MemSeries::default() }
    }
}

/// Tokens a request will generate in an engine with `max_len`: `max_new_tokens`, cut where the
/// sequence would reach `max_len` (EOS is ignored: accounting runs use `ignore_eos` workloads).
fn output_len(r: &Request, max_len: usize) -> usize {
    match r.max_new_tokens {
        0 => 0,
        n => n.min(max_len.saturating_sub(r.prompt.len())).max(1),
    }
}

fn check(requests: &[Request], max_len: usize) -> Result<()> {
    match requests.iter().find(|r| r.prompt.is_empty() || r.prompt.len() > max_len) {
        Some(r) => Err(ModelError::PromptTooLong { id: r.id, len: r.prompt.len(), max: max_len }),
        None => Ok(()),
    }
}

// ANCHOR: simulate_slots
/// Chapter 4 without a model: `cfg.num_slots` slots of `max_len` tokens, each step every running
/// request produces one token. A running request holds `max_len` tokens' worth of memory and
/// uses `prompt + generated − 1` of it (the newest token's K/V is written next step). A request
/// with `n` samples is `n` requests here, as in chapter 4's engine.
pub fn simulate_slots(requests: &[Request], cfg: SlotConfig, max_len: usize, bytes_per_token: u64) -> Result<MemSeries> {
    check(requests, max_len)?;
    let mut sched = Scheduler::new(cfg)?;
    let (mut target, mut prompt_len) = (Vec::new(), Vec::new()); // per sample, by SeqId
    for r in requests {
        for _ in 0..r.n {
            let seq = SeqId(target.len() as u64);
            target.push(output_len(r, max_len));
            prompt_len.push(r.prompt.len());
            if output_len(r, max_len) > 0 {
                sched.submit(Pending { seq, arrival_s: r.arrival_s, prefill_tokens: r.prompt.len() })?;
            }
        }
    }
    let mut generated = vec![0usize; target.len()];
    let mut series = MemSeries::default();
    while !sched.is_done() {
        let plan = sched.schedule(f64::INFINITY); // time does not pass in accounting: everyone has arrived
        let keys: Vec<SeqId> = plan.decode.iter().map(|d| d.seq).chain(plan.admit.iter().map(|a| a.seq)).collect();
        if keys.is_empty() {
            return Err(ModelError::InvalidSettings("slot accounting made no progress".into()));
        }
        let mut used = 0;
        for k in keys.iter().map(|k| k.0 as usize) {
            generated[k] += 1;
            used += (prompt_len[k] + generated[k] - 1) as u64 * bytes_per_token;
        }
        let reserved = keys.len() as u64 * max_len as u64 * bytes_per_token;
        let queued = sched.waiting_len() > 0;
        series.steps.push(MemStep { running: keys.len(), reserved_bytes: reserved, used_bytes: used, queued });
        for &k in &keys {
            if generated[k.0 as usize] == target[k.0 as usize] {
                sched.finish(k)?;
            }
        }
    }
    series.generated_tokens = generated.iter().sum();
    Ok(series)
}
// ANCHOR_END: simulate_slots

// ANCHOR: simulate_blocks
/// Chapter 5 without a model: the block scheduler over `cfg.num_blocks` blocks; each step every
/// scheduled sequence produces one token (an id of its own: only counts matter, unless prefix
/// sharing is on, where the prompts' ids matter and generated ids never match across sequences).
/// A request's `n` samples share its prompt's blocks, copy-on-write, as in chapter 5's engine.
pub fn simulate_blocks(
    requests: &[Request],
    cfg: SchedulerConfig,
    max_len: usize,
    bytes_per_token: u64,
) -> Result<MemSeries> {
    check(requests, max_len)?;
    let mut sched = BlockScheduler::new(cfg)?;
    // The engine's sequence table, as far as a scheduler sees it: tokens by id.
    let mut tokens: BTreeMap<SeqId, Vec<u32>> = BTreeMap::new();
    let mut target = Vec::new(); // by SeqId
    for r in requests {
        let n = output_len(r, max_len);
        if n > 0 {
            let ids: Vec<SeqId> = (target.len()..target.len() + r.n).map(|i| SeqId(i as u64)).collect();
            sched.submit(&ids, r.prompt.len(), r.prompt.len() + n, r.arrival_s)?;
            ids.iter().for_each(|&id| drop(tokens.insert(id, r.prompt.clone())));
            target.extend(std::iter::repeat_n(n, r.n));
        }
    }
    let block_bytes = cfg.block_size as u64 * bytes_per_token;
    let mut generated = vec![0usize; target.len()];
    let mut series = MemSeries::default();
    while !sched.is_done() {
        let plan = sched.schedule(&tokens, f64::INFINITY)?;
        if plan.work.is_empty() {
            return Err(ModelError::InvalidSettings("block accounting made no progress".into()));
        }
        series.steps.push(MemStep {
            running: plan.work.len(),
            reserved_bytes: sched.blocks_used() as u64 * block_bytes,
            used_bytes: sched.tokens_held() as u64 * bytes_per_token,
            queued: sched.num_waiting() > 0,
        });
        for w in &plan.work {
            let i = w.seq.0 as usize;
            generated[i] += 1;
            if generated[i] == target[i] {
                let done = tokens.remove(&w.seq).unwrap_or_default();
                sched.finish(w.seq, &done)?;
            } else if let Some(t) = tokens.get_mut(&w.seq) {
                t.push(u32::MAX - i as u32); // an id of its own: generated tokens never match
            }
        }
    }
    series.preemptions = sched.stats.preemptions;
    series.cow_copies = sched.stats.cow_copies;
    series.prefix_hit_rate = sched.stats.prefix_hit_rate();
    series.generated_tokens = generated.iter().sum();
    Ok(series)
}
// ANCHOR_END: simulate_blocks

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(num_slots: usize, max_tokens_per_step: usize) -> SlotConfig {
        SlotConfig { num_slots, max_running: num_slots, max_tokens_per_step }
    }

    fn reqs(shape: &[(usize, usize)]) -> Vec<Request> {
        let req =
            |i: usize, (p, n): (usize, usize)| Request { ignore_eos: true, ..Request::greedy(i as u64, vec![5; p], n) };
        shape.iter().enumerate().map(|(i, &s)| req(i, s)).collect()
    }

    #[test]
    fn slots_reserve_the_maximum_and_blocks_only_what_is_written() {
        // One request: 3-token prompt, 2 tokens out, max_len 8, 1 byte per token.
        let r = reqs(&[(3, 2)]);
        let slots = simulate_slots(&r, slots(1, 8), 8, 1).unwrap();
        let step = |running, reserved_bytes, used_bytes| MemStep { running, reserved_bytes, used_bytes, queued: false };
        assert_eq!(slots.steps, vec![step(1, 8, 3), step(1, 8, 4)]);
        let blocks = simulate_blocks(&r, SchedulerConfig::new(4, 2), 8, 1).unwrap();
        assert_eq!(blocks.steps, vec![step(1, 4, 3), step(1, 4, 4)]);
        assert_eq!((slots.generated_tokens, blocks.generated_tokens), (2, 2));
        assert!((slots.waste_pct() - 100.0 * (1.0 - 7.0 / 16.0)).abs() < 1e-9);
        assert!((blocks.waste_pct() - 100.0 * (1.0 - 7.0 / 8.0)).abs() < 1e-9);
    }

    #[test]
    fn the_same_memory_holds_more_requests_in_blocks() {
        // 64 tokens of memory: 2 slots of 32, or 16 blocks of 4; requests use ~10 tokens each.
        let r = reqs(&[(4, 6); 8]);
        let slots = simulate_slots(&r, slots(2, 32), 32, 1).unwrap();
        let blocks = simulate_blocks(&r, SchedulerConfig::new(16, 4), 32, 1).unwrap();
        // All 8 prompts fit at once (1 block each); as they grow past 16 blocks the youngest are
        // preempted and recomputed, and still everything finishes in fewer steps.
        assert_eq!((slots.peak_running(), blocks.peak_running()), (2, 8));
        assert!(blocks.preemptions > 0);
        assert_eq!((slots.generated_tokens, blocks.generated_tokens), (48, 48));
        assert!(blocks.steps.len() < slots.steps.len());
        assert!(blocks.steps.iter().all(|s| s.reserved_bytes <= 64 && s.used_bytes <= s.reserved_bytes));
    }

    #[test]
    fn a_prompt_longer_than_max_len_is_an_error() {
        let r = reqs(&[(9, 1)]);
        assert!(simulate_slots(&r, slots(1, 8), 8, 1).is_err());
        assert!(simulate_blocks(&r, SchedulerConfig::new(4, 2), 8, 1).is_err());
    }
}
