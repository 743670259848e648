//! Chapter 3: static batching. Up to B requests are prefilled together and decoded together, one
//! token each per step, until *every* one of them has finished; only then does the next batch
//! start. A row whose request finished early rides along as padding — computed every step, its
//! output thrown away — as in a padded batch tensor: that is the waste continuous batching
//! (chapter 4) removes.

pub mod cost;
pub mod recorder;
pub mod step;

pub use cost::decode_step_ms;
pub use recorder::Recorder;
pub use step::{run_step, Row};

use ch00_model::{Model, ModelError, Result};
use ch00_serving::{
    drive, resolve_max_len, sequences, Clock, Engine, EngineLoad, NewToken, Phase, Request, RequestOutput, RunOptions,
    RunOutput, Sequence, StepEngine, StepOutput,
};
use ch02_kv_cache::{ContiguousBackend, KvCache};
use std::collections::{HashMap, VecDeque};

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
        let mut core = StaticCore::new(model, *self, *opts)?;
        let outputs = drive(&mut core, requests)?;
        Ok(core.finish(outputs))
    }

    fn stepper<'m>(&self, model: &'m Model) -> Result<Box<dyn StepEngine + 'm>> {
        Ok(Box::new(StaticCore::new(model, *self, RunOptions::default())?))
    }
}

/// Static batching, one step at a time. A batch forms when the previous one has ended; a
/// request that finishes (or is aborted) early keeps its slot as padding until the batch ends.
pub struct StaticCore<'m> {
    model: &'m Model,
    batch_size: usize,
    backend: ContiguousBackend,
    recorder: Recorder,
    clock: Clock,
    opts: RunOptions,
    max_len: usize,
    /// Every sequence ever added, by key (one that is over keeps only its bookkeeping).
    seqs: Vec<Sequence>,
    /// Keys not yet batched, in arrival order (ties: order added).
    waiting: VecDeque<usize>,
    /// The running batch (empty between batches); slot i serves row i.
    rows: Vec<Row>,
    /// Aborted sequences (a batched one rides along as padding).
    gone: Vec<bool>,
    /// Request id -> keys of its sequences still in flight.
    live: HashMap<u64, Vec<usize>>,
    done: Vec<(usize, RequestOutput)>,
}

impl<'m> StaticCore<'m> {
    pub fn new(model: &'m Model, settings: StaticBatchEngine, opts: RunOptions) -> Result<Self> {
        let b = settings.batch_size;
        if b == 0 {
            return Err(ModelError::InvalidSettings("batch size must be at least 1".into()));
        }
        let max_len = resolve_max_len(&model.config, settings.max_len)?;
        let backend = alloc_slots(model, b, max_len);
        let allocated = backend.slots.iter().map(KvCache::bytes_allocated).sum();
        Ok(StaticCore {
            model,
            batch_size: b,
            backend,
            recorder: Recorder::new(b, allocated, opts.trace),
            clock: Clock::start(),
            opts,
            max_len,
            seqs: Vec::new(),
            waiting: VecDeque::new(),
            rows: Vec::new(),
            gone: Vec::new(),
            live: HashMap::new(),
            done: Vec::new(),
        })
    }

    /// The run's figures, with `outputs` (every sequence's, in the order added).
    pub fn finish(self, outputs: Vec<RequestOutput>) -> RunOutput {
        let wall_s = self.clock.now_s();
        self.recorder.finish(outputs, wall_s)
    }

    fn output(&mut self, key: usize) -> RequestOutput {
        let out = self.seqs[key].clone().into_output();
        if let Some(keys) = self.live.get_mut(&out.id) {
            keys.retain(|&k| k != key);
            if keys.is_empty() {
                self.live.remove(&out.id);
            }
        }
        out
    }

    fn over(&self, key: usize) -> bool {
        self.seqs[key].is_finished() || self.gone[key]
    }

    /// Ends the batch if every row is over: the slots are free, the tokens dropped.
    fn end_batch_if_over(&mut self) {
        if self.rows.iter().all(|r| self.over(r.seq)) {
            for r in std::mem::take(&mut self.rows) {
                self.seqs[r.seq].tokens = Vec::new();
            }
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
        for seq in sequences(&self.model.config, std::slice::from_ref(req), self.max_len)? {
            let key = self.seqs.len();
            let finished = seq.is_finished();
            let at = self.waiting.partition_point(|&w| self.seqs[w].arrival_s() <= seq.arrival_s());
            self.seqs.push(seq);
            self.gone.push(false);
            self.live.entry(req.id).or_default().push(key);
            if finished {
                let out = self.output(key);
                self.done.push((key, out));
            } else {
                self.waiting.insert(at, key);
            }
        }
        Ok(())
    }

    fn step(&mut self) -> Result<StepOutput> {
        let mut out = StepOutput { finished: std::mem::take(&mut self.done), ..Default::default() };
        // ANCHOR: batch
        if self.rows.is_empty() {
            // Form a batch from whoever has arrived, up to B; slot i serves the batch's i-th request.
            let now = self.clock.now_s();
            while self.rows.len() < self.batch_size {
                match self.waiting.front() {
                    Some(&k) if self.seqs[k].arrival_s() <= now => {
                        self.waiting.pop_front();
                        self.rows.push(Row { seq: k, slot: self.rows.len(), phase: Phase::Prefill });
                    }
                    _ => break,
                }
            }
            if self.rows.is_empty() {
                return Ok(out); // nobody has arrived yet: the caller waits
            }
        }
        // Step the batch. A row that is over keeps its slot and is computed as padding, its output
        // thrown away: the batch is a rectangle until its longest row ends.
        let fed = run_step(self.model, &mut self.backend, &mut self.seqs, &self.rows, &self.clock, &self.opts)?;
        self.recorder.record(&self.rows, &fed, &self.seqs, &self.backend, self.clock.now_s());
        out.ran = true;
        for i in 0..self.rows.len() {
            let r = self.rows[i];
            if r.phase == Phase::Padding {
                continue;
            }
            let seq = &self.seqs[r.seq];
            out.tokens.push(NewToken { id: seq.id, sample: seq.sample, token: seq.tokens[seq.tokens.len() - 1] });
            if seq.is_finished() {
                let done = self.output(r.seq); // its user has it now; its slot waits for the batch
                out.finished.push((r.seq, done));
            }
        }
        for i in 0..self.rows.len() {
            self.rows[i].phase = if self.over(self.rows[i].seq) { Phase::Padding } else { Phase::Decode };
        }
        self.end_batch_if_over();
        // ANCHOR_END: batch
        Ok(out)
    }

    fn abort(&mut self, id: u64) -> Result<bool> {
        let before = self.done.len();
        self.done.retain(|(_, o)| o.id != id);
        let keys = self.live.remove(&id).unwrap_or_default();
        for &k in &keys {
            self.gone[k] = true;
            self.waiting.retain(|&w| w != k);
            match self.rows.iter_mut().find(|r| r.seq == k) {
                Some(r) => r.phase = Phase::Padding, // static batching: the slot is held to the end
                None => self.seqs[k].tokens = Vec::new(),
            }
        }
        self.end_batch_if_over();
        Ok(!keys.is_empty() || self.done.len() < before)
    }

    fn has_unfinished(&self) -> bool {
        !self.waiting.is_empty() || !self.rows.is_empty() || !self.done.is_empty()
    }

    fn next_arrival(&self) -> Option<f64> {
        self.waiting.front().map(|&k| self.seqs[k].arrival_s())
    }

    fn load(&self) -> EngineLoad {
        EngineLoad {
            running: self.rows.iter().filter(|r| r.phase != Phase::Padding).count(),
            waiting: self.waiting.len(),
            kv_units_used: self.rows.len(),
            kv_units_total: self.batch_size,
            preemptions: 0,
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
