//! Chapter 3: static batching. Up to B requests are prefilled together and decoded together, one
//! token each per step, until *every* one of them has finished; only then does the next batch
//! start. A row whose request finished early rides along as padding — computed every step, its
//! output thrown away — as in a padded batch tensor: that is the waste continuous batching
//! (chapter 4) removes.
//!
//! [`step`] is one batched step over contiguous slots (rows, what each feeds, the step's record),
//! [`cost`] the measured cost of a decode step by batch size; this file is the engine.

pub mod cost;
pub mod step;

pub use cost::decode_step_ms;
pub use step::{run_step, Feed, Row};

use ch00_model::{Model, ModelError, Result};
use ch00_serving::{
    drive, resolve_max_len, Clock, Engine, EngineLoad, NewToken, Phase, Request, RunOptions, RunOutput, SeqId, SeqTable,
    StepEngine, StepOutput,
};
use ch02_kv_cache::{ContiguousBackend, KvCache};
use std::collections::VecDeque;

// ANCHOR: engine
/// The chapter-3 engine: batches of up to `batch_size` requests, each in its own contiguous cache
/// slot sized for `max_len` tokens.
#[derive(Debug, Clone, Copy)]
pub struct StaticBatchEngine {
    /// Requests per batch (B), and the number of cache slots.
    pub batch_size: usize,
    /// Tokens each slot is sized for; `None` means the model's context, capped at 4096 tokens.
    pub max_len: Option<usize>,
}

impl Default for StaticBatchEngine {
    fn default() -> Self {
        StaticBatchEngine { batch_size: 8, max_len: None }
    }
}
// ANCHOR_END: engine

/// `n` contiguous cache slots of `max_len` tokens each, all reserved up front.
pub fn alloc_slots(model: &Model, n: usize, max_len: usize) -> ContiguousBackend {
    ContiguousBackend { slots: (0..n).map(|_| KvCache::new(&model.config, max_len)).collect() }
}

impl Engine for StaticBatchEngine {
    fn name(&self) -> &'static str {
        "ch03-static-batching"
    }

    fn run(&mut self, model: &Model, requests: &[Request], opts: &RunOptions) -> Result<RunOutput> {
        drive(&mut StaticCore::new(model, *self, *opts)?, requests, opts)
    }

    fn stepper<'m>(&self, model: &'m Model) -> Result<Box<dyn StepEngine + 'm>> {
        Ok(Box::new(StaticCore::new(model, *self, RunOptions::default())?))
    }
}

// ANCHOR: core
/// Static batching, one step at a time. A batch forms when the previous one has ended; a
/// request that finishes (or is aborted) early keeps its slot as padding until the batch ends.
pub struct StaticCore<'m> {
    model: &'m Model,
    batch_size: usize,
    backend: ContiguousBackend,
    clock: Clock,
    opts: RunOptions,
    max_len: usize,
    seqs: SeqTable,
    /// Sequences not yet batched, in arrival order (ties: order added).
    waiting: VecDeque<SeqId>,
    /// The running batch (empty between batches); slot i serves row i.
    rows: Vec<Row>,
}
// ANCHOR_END: core

impl<'m> StaticCore<'m> {
    pub fn new(model: &'m Model, settings: StaticBatchEngine, opts: RunOptions) -> Result<Self> {
        let b = settings.batch_size;
        if b == 0 {
            return Err(ModelError::InvalidSettings("batch size must be at least 1".into()));
        }
        let max_len = resolve_max_len(&model.config, settings.max_len)?;
        Ok(StaticCore {
            model,
            batch_size: b,
            backend: alloc_slots(model, b, max_len),
            clock: Clock::start(),
            opts,
            max_len,
            seqs: SeqTable::new(),
            waiting: VecDeque::new(),
            rows: Vec::new(),
        })
    }

    /// Ends the batch if every row is padding: the slots are free for the next one.
    fn end_batch_if_over(&mut self) {
        if self.rows.iter().all(|r| matches!(r.feed, Feed::Padding { .. })) {
            self.rows.clear();
        }
    }
}

impl StepEngine for StaticCore<'_> {
    fn now_s(&self) -> f64 {
        self.clock.now_s()
    }

    fn add_request(&mut self, req: &Request) -> Result<()> {
        if !req.arrival_s.is_finite() {
            return Err(ModelError::InvalidSettings(format!("request {}: arrival time {}", req.id, req.arrival_s)));
        }
        // One sequence per sample: a request's n samples are n independent rows here.
        for id in self.seqs.add(&self.model.config, req, self.max_len)? {
            let seqs = &self.seqs;
            let at = self.waiting.partition_point(|&w| seqs.get(w).is_ok_and(|s| s.arrival_s() <= req.arrival_s));
            self.waiting.insert(at, id);
        }
        Ok(())
    }

    fn step(&mut self) -> Result<StepOutput> {
        let mut out = StepOutput { finished: self.seqs.take_done(), ..Default::default() };
        // ANCHOR: batch
        if self.rows.is_empty() {
            // Form a batch from whoever has arrived, up to B; slot i serves the batch's i-th request.
            let now = self.clock.now_s();
            while self.rows.len() < self.batch_size {
                let Some(&id) = self.waiting.front() else { break };
                let seq = self.seqs.get(id)?;
                if seq.arrival_s() > now {
                    break;
                }
                self.waiting.pop_front();
                self.rows.push(Row { seq: id, request: seq.id, slot: self.rows.len(), feed: Feed::Prefill });
            }
            if self.rows.is_empty() {
                return Ok(out); // nobody has arrived yet: the caller waits
            }
        }
        // Step the batch. A row that is over keeps its slot and is computed as padding, its output
        // thrown away: the batch is a rectangle until its longest row ends.
        let (rows, clock, opts) = (&self.rows, &self.clock, &self.opts);
        let ran = run_step(self.model, &mut self.backend, &mut self.seqs, rows, clock, opts)?;
        out.ran = Some(ran);
        for r in self.rows.iter_mut().filter(|r| r.phase() != Phase::Padding) {
            let seq = self.seqs.get(r.seq)?;
            let (token, pos) = (seq.tokens[seq.tokens.len() - 1], seq.tokens.len() - 1);
            out.tokens.push(NewToken { id: seq.id, sample: seq.sample, token });
            r.feed = Feed::Decode;
            if seq.is_finished() {
                // Its user has it now; its slot rides along as padding until the batch ends.
                out.finished.push((r.seq, self.seqs.finish(r.seq)?));
                r.feed = Feed::Padding { token, pos };
            }
        }
        self.end_batch_if_over();
        // ANCHOR_END: batch
        Ok(out)
    }

    fn abort(&mut self, id: u64) -> Result<bool> {
        let (gone, had_done) = self.seqs.abort(id);
        for (sid, seq) in &gone {
            self.waiting.retain(|w| w != sid);
            if let Some(r) = self.rows.iter_mut().find(|r| r.seq == *sid) {
                // Static batching: the slot is held to the end of the batch.
                let pos = seq.tokens.len() - 1;
                r.feed = Feed::Padding { token: seq.tokens[pos], pos };
            }
        }
        self.end_batch_if_over();
        Ok(!gone.is_empty() || had_done)
    }

    fn has_unfinished(&self) -> bool {
        !self.waiting.is_empty() || !self.rows.is_empty() || self.seqs.has_done()
    }

    fn next_arrival(&self) -> Option<f64> {
        self.waiting.front().and_then(|&id| self.seqs.get(id).ok()).map(|s| s.arrival_s())
    }

    fn load(&self) -> EngineLoad {
        EngineLoad {
            running: self.rows.iter().filter(|r| r.phase() != Phase::Padding).count(),
            waiting: self.waiting.len(),
            kv_units_used: self.rows.len(),
            kv_units_total: self.batch_size,
            kv_bytes_total: self.backend.slots.iter().map(KvCache::bytes_allocated).sum(),
            ..EngineLoad::default() // no preemption, no prefix cache
        }
    }

    fn max_len(&self) -> usize {
        self.max_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ch00_model::LlamaConfig;

    fn tiny() -> Model {
        Model::random(LlamaConfig::named("tiny").unwrap(), 0).unwrap()
    }

    #[test]
    fn batch_size_zero_is_an_error() {
        let e = StaticBatchEngine { batch_size: 0, max_len: None }.run(&tiny(), &[], &RunOptions::default());
        assert!(matches!(e, Err(ModelError::InvalidSettings(_))), "{e:?}");
    }

    #[test]
    fn a_non_finite_arrival_time_is_an_error() {
        let r = Request { arrival_s: f64::INFINITY, ..Request::greedy(0, vec![4], 2) };
        let e = StaticBatchEngine::default().run(&tiny(), &[r], &RunOptions::default());
        assert!(matches!(e, Err(ModelError::InvalidSettings(_))), "{e:?}");
    }

    #[test]
    fn a_batch_runs_until_its_longest_request_is_done_and_counts_the_padding_rows() {
        let model = tiny();
        let reqs: Vec<_> =
            [2, 5, 3].iter().enumerate().map(|(i, &n)| Request::greedy(i as u64, vec![4, 5], n)).collect();
        let reqs: Vec<_> = reqs.into_iter().map(|r| Request { ignore_eos: true, ..r }).collect();
        let opts = RunOptions { trace: true, ..Default::default() };
        let out = StaticBatchEngine { batch_size: 4, max_len: Some(32) }.run(&model, &reqs, &opts).unwrap();
        let s = &out.stats;
        // One prefill step (first token of each) + 4 decode steps for the 5-token request.
        assert_eq!(s.steps, 5);
        assert_eq!(s.generated_tokens, 10);
        // Padding rows after finishing: request 0 for 3 steps, request 2 for 2 steps.
        assert_eq!(s.wasted_slot_steps, 5);
        assert_eq!(s.peak_running, 3);
        assert!((s.slot_utilisation - 10.0 / 20.0).abs() < 1e-12, "{}", s.slot_utilisation);
        assert_eq!(s.kv_bytes_allocated, 4 * KvCache::new(&model.config, 32).bytes_allocated());
        // At the end every row holds its whole sequence: 2 + 4 fed tokens of request 1, and the
        // padding rows wrote their last token too (2 + 2 and 2 + 3).
        let per_token = ch00_model::kv_bytes_per_token(&model.config, ch00_model::DType::F32);
        assert_eq!(s.kv_bytes_used, (6 + 4 + 5) * per_token);
        // Padding is computed: every step feeds all three rows after the prefill.
        let fed: Vec<usize> = out.trace.iter().map(|t| t.entries.iter().map(|e| e.tokens).sum()).collect();
        assert_eq!(fed, vec![6, 3, 3, 3, 3]);
        assert_eq!(s.token_rows, 18);
    }

    #[test]
    fn the_next_batch_waits_for_the_whole_previous_batch() {
        let model = tiny();
        let reqs: Vec<_> = [6, 1, 1]
            .iter()
            .enumerate()
            .map(|(i, &n)| Request { ignore_eos: true, ..Request::greedy(i as u64, vec![9], n) })
            .collect();
        let opts = RunOptions { trace: true, ..Default::default() };
        let out = StaticBatchEngine { batch_size: 2, max_len: Some(16) }.run(&model, &reqs, &opts).unwrap();
        // Batch {0, 1}: 6 steps; request 2 only starts at step 6, in slot 0.
        let first_of_2 = out.trace.iter().position(|t| t.entries.iter().any(|e| e.request == 2)).unwrap();
        assert_eq!(first_of_2, 6);
        assert_eq!(out.trace[first_of_2].entries[0].phase, Phase::Prefill);
        assert_eq!(out.trace[first_of_2].entries[0].slot, 0);
    }
}
