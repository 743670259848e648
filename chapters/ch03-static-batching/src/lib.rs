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

use ch00_model::{resolve_max_len, sequences, Clock, Engine, Model, ModelError, Phase, Request, Result, RunOptions, RunOutput};
use ch02_kv_cache::{ContiguousBackend, KvCache};

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
        let b = self.batch_size;
        if b == 0 {
            return Err(ModelError::InvalidSettings("batch size must be at least 1".into()));
        }
        let max_len = resolve_max_len(&model.config, self.max_len)?;
        // One sequence per sample: a request's n samples are n independent rows here.
        let mut seqs = sequences(&model.config, requests, max_len)?;
        if let Some(r) = requests.iter().find(|r| !r.arrival_s.is_finite()) {
            return Err(ModelError::InvalidSettings(format!("request {}: arrival time {}", r.id, r.arrival_s)));
        }
        // Serve in arrival order (ties: submission order); requests with nothing to do are done.
        let mut order: Vec<usize> = (0..seqs.len()).filter(|&i| !seqs[i].is_finished()).collect();
        order.sort_by(|&a, &c| seqs[a].arrival_s().total_cmp(&seqs[c].arrival_s()));

        let mut backend = alloc_slots(model, b, max_len);
        let allocated = backend.slots.iter().map(KvCache::bytes_allocated).sum();
        let mut recorder = Recorder::new(b, allocated, opts.trace);
        let clock = Clock::start();
        let mut next = 0; // first request of `order` not yet batched
        while next < order.len() {
            clock.wait_until(seqs[order[next]].arrival_s());
            // ANCHOR: batch
            // Form a batch from whoever has arrived, up to B; slot i serves the batch's i-th request.
            let now = clock.now_s();
            let mut rows = Vec::with_capacity(b);
            while rows.len() < b && next < order.len() && seqs[order[next]].arrival_s() <= now {
                rows.push(Row { seq: order[next], slot: rows.len(), phase: Phase::Prefill });
                next += 1;
            }
            if rows.is_empty() {
                continue; // woke a little early: wait again
            }
            // Step until every row has finished. A finished row keeps its slot and is computed as
            // padding, its output thrown away: the batch is a rectangle until its longest row ends.
            loop {
                let fed = run_step(model, &mut backend, &mut seqs, &rows, &clock, opts)?;
                recorder.record(&rows, &fed, &seqs, &backend, clock.now_s());
                if rows.iter().all(|r| seqs[r.seq].is_finished()) {
                    break;
                }
                for r in &mut rows {
                    r.phase = if seqs[r.seq].is_finished() { Phase::Padding } else { Phase::Decode };
                }
            }
            // ANCHOR_END: batch
        }
        Ok(recorder.finish(seqs, clock.now_s()))
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
