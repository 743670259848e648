//! Chapter 2: a KV cache. The prompt is processed once (prefill); every later step feeds only the
//! newest token and reads the earlier tokens' K and V from a contiguous per-request cache that is
//! allocated up front for the maximum length.
//!
//! [`cache`] is one request's contiguous K/V store, [`backend`] the attention over such caches
//! (indexed by `StepMeta::seq`); this file is the one-request-at-a-time engine.

pub mod backend;
pub mod cache;

pub use backend::ContiguousBackend;
pub use cache::KvCache;

use ch00_model::ops::row;
use ch00_model::{Model, Result, StepMeta};
use ch00_serving::{resolve_max_len, sequences, Clock, Engine, Request, RunOptions, RunOutput, RunStats};

// ANCHOR: engine
/// The chapter-2 engine: one request at a time, prefill then one-token decode steps over a cache
/// sized for `max_len` tokens.
#[derive(Debug, Default)]
pub struct KvCacheEngine {
    /// Tokens each cache is sized for; `None` means the model's context, capped at 4096 tokens.
    pub max_len: Option<usize>,
}
// ANCHOR_END: engine

impl Engine for KvCacheEngine {
    fn name(&self) -> &'static str {
        "ch02-kv-cache"
    }

    fn run(&mut self, model: &Model, requests: &[Request], opts: &RunOptions) -> Result<RunOutput> {
        // ANCHOR: max_len
        let max_len = resolve_max_len(&model.config, self.max_len)?;
        let mut seqs = sequences(&model.config, requests, max_len)?; // n per request with n samples
        // ANCHOR_END: max_len
        let clock = Clock::start();
        let (mut steps, mut rows, mut allocated, mut used) = (0, 0, 0, 0);
        for seq in &mut seqs {
            clock.wait_until(seq.arrival_s());
            if seq.is_finished() {
                continue;
            }
            let mut backend = ContiguousBackend { slots: vec![KvCache::new(&model.config, max_len)] };
            // ANCHOR: generate
            // Prefill: the whole prompt in one step; its last token's logits give the first token.
            let n = seq.tokens.len();
            let logits = model.forward(&seq.tokens, &StepMeta::span(0, 0, n), &[n - 1], &mut backend)?;
            seq.accept(row(&logits, 0), clock.now_s(), opts);
            steps += 1;
            rows += n as u64;
            // Decode: feed only the newest token; the cache holds everything before it.
            while !seq.is_finished() {
                let pos = seq.tokens.len() - 1;
                let meta = StepMeta::span(0, pos, 1);
                let logits = model.forward(&seq.tokens[pos..], &meta, &[0], &mut backend)?;
                seq.accept(row(&logits, 0), clock.now_s(), opts);
                steps += 1;
                rows += 1;
            }
            // ANCHOR_END: generate
            // ANCHOR: stats
            let cache = &backend.slots[0];
            allocated = allocated.max(cache.bytes_allocated());
            used = used.max(cache.bytes_used());
            // ANCHOR_END: stats
        }
        let stats = RunStats {
            wall_s: clock.now_s(),
            steps,
            token_rows: rows,
            mean_batch_size: if steps > 0 { 1.0 } else { 0.0 },
            kv_bytes_allocated: allocated,
            kv_bytes_reserved: allocated, // one request's cache at a time
            kv_bytes_used: used,
            peak_running: usize::from(steps > 0),
            slot_utilisation: 1.0,
            ..RunStats::default()
        };
        Ok(RunOutput::from_sequences(seqs, stats, Vec::new()))
    }
}
