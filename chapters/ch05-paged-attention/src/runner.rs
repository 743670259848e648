//! What every paged engine shares: the scheduling loop. A [`PagedRunner`] runs the model over the
//! step's spans, reading and writing K/V through block tables; chapter 5's runner is the CPU model
//! over [`crate::PagedKvPool`], chapter 6's is the GPU. The loop, the block scheduler and the
//! sequence table are this one implementation for both.

use crate::block_table::BlockId;
use crate::scheduler::{BlockScheduler, SchedulerConfig, SchedulerStats, Work};
use ch00_model::{kv_bytes_per_token, DType, LlamaConfig, ModelError, Result};
use ch00_serving::{
    drive, Clock, EngineLoad, NewToken, Phase, Request, RunOptions, RunOutput, SeqTable, Span, StepEngine, StepOutput,
    StepRecord, TokenSource, TraceEntry,
};

// ANCHOR: runner
/// Runs the model for one step of a paged engine.
pub trait PagedRunner {
    fn config(&self) -> &LlamaConfig;
    /// The element type K/V is stored in (for the byte accounting).
    fn kv_dtype(&self) -> DType;
    /// Copy-on-write: copies every layer's K and V of block `src` into block `dst`, for each
    /// (src, dst) in order. Called before the step's forward pass (`step`) when the plan has copies.
    fn copy_blocks(&mut self, copies: &[(BlockId, BlockId)]) -> Result<()>;
    /// One forward pass over `spans`; span i writes and reads its K/V through `tables[i]`
    /// (`Span::slot == i`). Each span's sequence in `seqs` accepts its next token.
    fn step(
        &mut self,
        seqs: &mut SeqTable,
        spans: &[Span],
        tables: Vec<Vec<BlockId>>,
        clock: &Clock,
        opts: &RunOptions,
    ) -> Result<()>;
}
// ANCHOR_END: runner

impl<T: PagedRunner + ?Sized> PagedRunner for &mut T {
    fn config(&self) -> &LlamaConfig {
        (**self).config()
    }
    fn kv_dtype(&self) -> DType {
        (**self).kv_dtype()
    }
    fn copy_blocks(&mut self, copies: &[(BlockId, BlockId)]) -> Result<()> {
        (**self).copy_blocks(copies)
    }
    fn step(
        &mut self,
        seqs: &mut SeqTable,
        spans: &[Span],
        tables: Vec<Vec<BlockId>>,
        clock: &Clock,
        opts: &RunOptions,
    ) -> Result<()> {
        (**self).step(seqs, spans, tables, clock, opts)
    }
}

/// Serves `requests` on a pool of `cfg.num_blocks` blocks: the whole workload added to a
/// [`PagedCore`], then stepped until every request has finished. Returns the run and the block
/// scheduler's counters.
pub fn run_paged(
    runner: &mut dyn PagedRunner,
    cfg: SchedulerConfig,
    max_len: usize,
    requests: &[Request],
    opts: &RunOptions,
) -> Result<(RunOutput, SchedulerStats)> {
    let mut core = PagedCore::new(runner, cfg, max_len, *opts)?;
    let out = drive(&mut core, requests, opts)?;
    Ok((out, core.sched.stats.clone()))
}

// ANCHOR: core
/// Chapter 4's loop with the block scheduler deciding who runs and the runner running them.
/// `step` is one iteration of the loop; the offline run and the server both call it.
pub struct PagedCore<R: PagedRunner> {
    runner: R,
    sched: BlockScheduler,
    seqs: SeqTable,
    config: LlamaConfig,
    max_len: usize,
    opts: RunOptions,
    clock: Clock,
    /// KV bytes of one token and of one block, in the runner's dtype.
    token_bytes: u64,
    block_bytes: u64,
}
// ANCHOR_END: core

impl<R: PagedRunner> PagedCore<R> {
    pub fn new(runner: R, cfg: SchedulerConfig, max_len: usize, opts: RunOptions) -> Result<Self> {
        let config = runner.config().clone();
        let token_bytes = kv_bytes_per_token(&config, runner.kv_dtype());
        Ok(PagedCore {
            sched: BlockScheduler::new(cfg)?,
            runner,
            seqs: SeqTable::new(),
            config,
            max_len,
            opts,
            clock: Clock::start(),
            token_bytes,
            block_bytes: cfg.block_size as u64 * token_bytes,
        })
    }

    /// Blocks free in the pool right now.
    pub fn blocks_free(&self) -> usize {
        self.sched.blocks_free()
    }

    /// The block scheduler's counters so far.
    pub fn scheduler_stats(&self) -> &SchedulerStats {
        &self.sched.stats
    }
}

impl<R: PagedRunner> StepEngine for PagedCore<R> {
    fn now_s(&self) -> f64 {
        self.clock.now_s()
    }

    fn add_request(&mut self, req: &Request) -> Result<()> {
        let ids = self.seqs.add(&self.config, req, self.max_len)?; // validates
        if ids.is_empty() {
            return Ok(()); // nothing to generate: the next step hands its outputs out
        }
        // The request's samples share its prompt's blocks (copy-on-write).
        let max_tokens = self.seqs.get(ids[0])?.max_tokens();
        if let Err(e) = self.sched.submit(&ids, req.prompt.len(), max_tokens, req.arrival_s) {
            self.seqs.discard(&ids);
            return Err(e);
        }
        Ok(())
    }

    // ANCHOR: step
    fn step(&mut self) -> Result<StepOutput> {
        let mut out = StepOutput { finished: self.seqs.take_done(), ..Default::default() };
        if self.sched.is_done() {
            return Ok(out);
        }
        let now = self.clock.now_s();
        let plan = self.sched.schedule(&self.seqs, now)?;
        out.preempted = plan.preempted.iter().map(|&v| self.seqs.get(v).map(|s| s.id)).collect::<Result<_>>()?;
        if plan.work.is_empty() {
            // Nothing running and nobody has arrived yet: the caller waits for the next arrival.
            return match self.sched.next_arrival() {
                Some(t) if t > now => Ok(out),
                _ => Err(ModelError::InvalidSettings("the block scheduler made no progress".into())),
            };
        }
        let tables = plan.work.iter().map(|w| self.sched.table(w.seq).to_vec()).collect();
        let spans = spans_of(&self.seqs, &plan.work)?;
        let picks: Vec<bool> = spans.iter().map(|s| s.start + s.len == self.seqs.tokens(s.seq).len()).collect();
        if !plan.copies.is_empty() {
            self.runner.copy_blocks(&plan.copies)?; // before anyone writes into the copied blocks
        }
        self.runner.step(&mut self.seqs, &spans, tables, &self.clock, &self.opts)?;
        out.ran = Some(self.record(&plan.work)?);
        // Finished sequences give their blocks back now and leave the table. A chunk from the
        // middle of a prompt produced no token.
        for (w, _) in plan.work.iter().zip(picks).filter(|&(_, picks)| picks) {
            let seq = self.seqs.get(w.seq)?;
            out.tokens.push(NewToken { id: seq.id, sample: seq.sample, token: seq.tokens[seq.tokens.len() - 1] });
            if seq.is_finished() {
                self.sched.finish(w.seq, &seq.tokens)?;
                out.finished.push((w.seq, self.seqs.finish(w.seq)?));
            }
        }
        Ok(out)
    }
    // ANCHOR_END: step

    // ANCHOR: abort
    fn abort(&mut self, id: u64) -> Result<bool> {
        let (gone, had_done) = self.seqs.abort(id);
        for (s, _) in &gone {
            self.sched.abort(*s)?; // its blocks are free before the next step
        }
        Ok(!gone.is_empty() || had_done)
    }
    // ANCHOR_END: abort

    fn has_unfinished(&self) -> bool {
        !self.sched.is_done() || self.seqs.has_done()
    }

    fn next_arrival(&self) -> Option<f64> {
        self.sched.next_arrival()
    }

    fn load(&self) -> EngineLoad {
        let num_blocks = self.sched.config().num_blocks;
        let prefix = self.sched.prefix_stats();
        EngineLoad {
            running: self.sched.running().len(),
            waiting: self.sched.num_waiting(),
            kv_units_used: self.sched.blocks_used(),
            kv_units_total: num_blocks,
            kv_bytes_total: num_blocks as u64 * self.block_bytes,
            preemptions: self.sched.stats.preemptions,
            prefix_query_tokens: (prefix.hits + prefix.misses) as u64,
            prefix_hit_tokens: prefix.hits as u64,
            prefix_evicted_blocks: prefix.evictions as u64,
        }
    }

    fn max_len(&self) -> usize {
        self.max_len
    }
}

impl<R: PagedRunner> PagedCore<R> {
    /// What the step computed and held, before finished sequences give their blocks back.
    fn record(&self, work: &[Work]) -> Result<StepRecord> {
        let mut rows = Vec::with_capacity(work.len());
        for (slot, w) in work.iter().enumerate() {
            let phase = if w.prefill { Phase::Prefill } else { Phase::Decode };
            rows.push(TraceEntry { slot, request: self.seqs.get(w.seq)?.id, phase, tokens: w.len });
        }
        let blocks = self.sched.blocks_used();
        Ok(StepRecord {
            rows,
            kv_bytes_allocated: blocks as u64 * self.block_bytes,
            kv_bytes_used: self.sched.tokens_held() as u64 * self.token_bytes,
            kv_units_used: blocks,
            kv_units_reserved: blocks,
        })
    }
}

// ANCHOR: spans
/// The step's spans: work item i feeds `len` tokens of its sequence from `start` and uses block
/// table i. A chunk that stops short of the sequence's end (chunked prefill) picks no token.
fn spans_of(seqs: &SeqTable, work: &[Work]) -> Result<Vec<Span>> {
    let mut spans = Vec::with_capacity(work.len());
    for (i, w) in work.iter().enumerate() {
        if w.start + w.len > seqs.get(w.seq)?.tokens.len() {
            return Err(ModelError::InvalidBatch(format!("work for {} runs past its end", w.seq)));
        }
        spans.push(Span { seq: w.seq, slot: i, start: w.start, len: w.len, padding: None });
    }
    Ok(spans)
}
// ANCHOR_END: spans

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CpuRunner, PagedBackend, PagedEngine, PagedKvPool};
    use ch00_model::{Model, SamplingParams};
    use ch00_serving::Engine;
    use std::collections::HashMap;

    fn core(model: &Model, blocks: usize) -> PagedCore<CpuRunner<'_>> {
        let cfg = SchedulerConfig::new(blocks, 4);
        let pool = PagedKvPool::new(&model.config, blocks, 4).unwrap();
        let runner = CpuRunner { model, backend: PagedBackend { pool, tables: Vec::new() } };
        PagedCore::new(runner, cfg, 64, RunOptions::default()).unwrap()
    }

    fn req(id: u64, n: usize, max_new: usize) -> Request {
        let sampling = SamplingParams { temperature: 0.9, seed: id, ..SamplingParams::greedy() };
        Request { ignore_eos: true, n, sampling, ..Request::greedy(id, vec![4, 5, 6, 7, 8], max_new) }
    }

    #[test]
    fn requests_added_mid_run_get_the_tokens_of_an_offline_run() {
        let model = Model::random(ch00_model::LlamaConfig::named("tiny").unwrap(), 0).unwrap();
        let reqs = [req(1, 1, 9), req(2, 2, 5), req(3, 1, 7)];
        let want = PagedEngine { block_size: 4, max_len: Some(64), ..Default::default() }
            .run(&model, &reqs, &RunOptions::default())
            .unwrap();
        let mut e = core(&model, 64);
        let mut streamed: HashMap<(u64, usize), Vec<u32>> = HashMap::new();
        let mut finished = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            e.add_request(r).unwrap(); // one more request joins every few steps
            for _ in 0..i + 2 {
                let out = e.step().unwrap();
                out.tokens.iter().for_each(|t| streamed.entry((t.id, t.sample)).or_default().push(t.token));
                finished.extend(out.finished);
            }
        }
        while e.has_unfinished() {
            let out = e.step().unwrap();
            out.tokens.iter().for_each(|t| streamed.entry((t.id, t.sample)).or_default().push(t.token));
            finished.extend(out.finished);
        }
        assert_eq!(finished.len(), want.outputs.len());
        finished.sort_by_key(|(seq, _)| *seq);
        for ((_, got), want) in finished.iter().zip(&want.outputs) {
            assert_eq!((got.id, got.sample, &got.tokens), (want.id, want.sample, &want.tokens));
            assert_eq!(streamed[&(got.id, got.sample)], got.tokens);
        }
        assert_eq!(e.blocks_free(), 64);
    }

    #[test]
    fn abort_frees_the_blocks_at_once_running_or_waiting() {
        let model = Model::random(ch00_model::LlamaConfig::named("tiny").unwrap(), 0).unwrap();
        let mut e = core(&model, 8);
        e.add_request(&req(1, 2, 20)).unwrap();
        e.add_request(&req(2, 1, 20)).unwrap();
        e.step().unwrap();
        e.step().unwrap();
        assert!(e.blocks_free() < 8);
        assert!(e.abort(1).unwrap());
        assert!(!e.abort(1).unwrap(), "nothing left of request 1");
        assert!(e.abort(2).unwrap());
        assert_eq!((e.blocks_free(), e.has_unfinished()), (8, false));
        assert_eq!(e.load(), EngineLoad { kv_units_total: 8, kv_bytes_total: 8 * e.block_bytes, ..Default::default() });
        // A bad request is refused and changes nothing.
        assert!(e.add_request(&Request::greedy(3, vec![], 4)).is_err());
        assert!(e.add_request(&req(4, 1, 100)).is_err(), "more blocks than the pool");
        assert!(!e.has_unfinished());
    }

    // ANCHOR: bounded
    #[test]
    fn ten_thousand_requests_leave_nothing_behind() {
        // A server's life in miniature: requests join while others run, some with several
        // samples, some aborted by their clients; what the engine holds must stay bounded by
        // what is in flight, never grow with what has finished.
        let model = Model::random(ch00_model::LlamaConfig::named("tiny").unwrap(), 0).unwrap();
        let mut e = core(&model, 64);
        let mut most = 0;
        for id in 0..10_000u64 {
            let r = Request { prompt: vec![4, 5, (id % 50) as u32], ..req(id, 1 + (id % 3 == 0) as usize, 1 + (id % 4) as usize) };
            e.add_request(&r).unwrap();
            if id % 7 == 0 {
                e.abort(id).unwrap();
            }
            e.step().unwrap();
            most = most.max(e.seqs.len()).max(e.sched.num_sequences());
        }
        while e.has_unfinished() {
            e.step().unwrap();
        }
        assert!(most <= 16, "the table held {most} sequences at once");
        assert_eq!((e.seqs.len(), e.sched.num_sequences(), e.blocks_free()), (0, 0, 64));
    }
    // ANCHOR_END: bounded
}
