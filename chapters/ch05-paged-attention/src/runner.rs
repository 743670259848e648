//! What every paged engine shares: the scheduling loop. A [`PagedRunner`] runs the model over the
//! step's spans, reading and writing K/V through block tables; chapter 5's runner is the CPU model
//! over [`crate::PagedKvPool`], chapter 6's is the GPU. The loop, the block scheduler and the
//! bookkeeping are this one implementation for both.

use crate::allocator::BlockId;
use crate::scheduler::{BlockScheduler, SchedulerConfig, SchedulerStats, Work};
use ch00_model::{kv_bytes_per_token, DType, LlamaConfig, ModelError, Result};
use ch00_serving::{
    drive, sequences, Clock, EngineLoad, NewToken, Phase, Request, RequestOutput, RunOptions, RunOutput, RunStats,
    Sequence, Span, StepEngine, StepOutput, TraceEntry, TraceStep,
};
use std::collections::HashMap;

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
    /// (`Span::slot == i`). Each sequence of a span accepts its next token.
    fn step(
        &mut self,
        seqs: &mut [Sequence],
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
        seqs: &mut [Sequence],
        spans: &[Span],
        tables: Vec<Vec<BlockId>>,
        clock: &Clock,
        opts: &RunOptions,
    ) -> Result<()> {
        (**self).step(seqs, spans, tables, clock, opts)
    }
}

/// Block-level figures of a run, beyond [`RunStats`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlockRunInfo {
    pub num_blocks: usize,
    pub block_size: usize,
    /// Blocks in use after each step's scheduling.
    pub blocks_used: Vec<usize>,
    /// (step, request id) of every preemption.
    pub preempted: Vec<(usize, u64)>,
    /// Most blocks each output (a request's sample) held at once, in output order (0 for
    /// those never run).
    pub peak_blocks_per_request: Vec<usize>,
    pub scheduler: SchedulerStats,
}

/// Serves `requests` on a pool of `cfg.num_blocks` blocks: the whole workload added to a
/// [`PagedCore`], then stepped until every request has finished.
pub fn run_paged(
    runner: &mut dyn PagedRunner,
    cfg: SchedulerConfig,
    max_len: usize,
    requests: &[Request],
    opts: &RunOptions,
) -> Result<(RunOutput, BlockRunInfo)> {
    let mut core = PagedCore::new(runner, cfg, max_len, *opts)?;
    let outputs = drive(&mut core, requests)?;
    Ok(core.finish(outputs))
}

// ANCHOR: core
/// Chapter 4's loop taken apart into steps, with the block scheduler deciding who runs and the
/// runner running them. `step` is one iteration of the loop; the offline run and the server
/// both call it.
pub struct PagedCore<R: PagedRunner> {
    runner: R,
    sched: BlockScheduler,
    config: LlamaConfig,
    max_len: usize,
    opts: RunOptions,
    clock: Clock,
    rec: BlockRecorder,
    /// The sequences in flight, in no particular order, and each one's scheduler index.
    live: Vec<Sequence>,
    live_sched: Vec<usize>,
    /// Scheduler index -> position in `live`.
    pos_of: HashMap<usize, usize>,
    /// Scheduler index -> engine index (the order sequences were added in).
    seq_of: Vec<usize>,
    added: usize,
    /// Requests with nothing to generate (`max_new_tokens` 0), reported by the next step.
    done: Vec<(usize, RequestOutput)>,
}
// ANCHOR_END: core

impl<R: PagedRunner> PagedCore<R> {
    pub fn new(runner: R, cfg: SchedulerConfig, max_len: usize, opts: RunOptions) -> Result<Self> {
        let config = runner.config().clone();
        let rec = BlockRecorder::new(&config, runner.kv_dtype(), cfg, opts.trace);
        Ok(PagedCore {
            sched: BlockScheduler::new(cfg)?,
            runner,
            config,
            max_len,
            opts,
            clock: Clock::start(),
            rec,
            live: Vec::new(),
            live_sched: Vec::new(),
            pos_of: HashMap::new(),
            seq_of: Vec::new(),
            added: 0,
            done: Vec::new(),
        })
    }

    /// Blocks free in the pool right now.
    pub fn blocks_free(&self) -> usize {
        self.sched.blocks_free()
    }

    /// The run's figures, with `outputs` (every sequence's, in the order added).
    pub fn finish(self, outputs: Vec<RequestOutput>) -> (RunOutput, BlockRunInfo) {
        let wall_s = self.clock.now_s();
        self.rec.finish(outputs, &self.sched, &self.seq_of, wall_s)
    }

    /// Takes sequence `s` (a scheduler index) out of the live set.
    fn remove(&mut self, s: usize) -> Result<Sequence> {
        let p = self.pos_of.remove(&s).ok_or_else(|| ModelError::InvalidBatch(format!("sequence {s} is not live")))?;
        let seq = self.live.swap_remove(p);
        self.live_sched.swap_remove(p);
        if let Some(&moved) = self.live_sched.get(p) {
            self.pos_of.insert(moved, p);
        }
        Ok(seq)
    }
}

impl<R: PagedRunner> StepEngine for PagedCore<R> {
    fn now_s(&self) -> f64 {
        self.clock.now_s()
    }

    fn add_request(&mut self, req: &Request) -> Result<()> {
        let seqs = sequences(&self.config, std::slice::from_ref(req), self.max_len)?; // validates
        let first = self.added;
        if seqs[0].is_finished() {
            self.done.extend(seqs.into_iter().enumerate().map(|(i, s)| (first + i, s.into_output())));
        } else {
            // The request's samples share its prompt's blocks (copy-on-write).
            let head = &seqs[0];
            let group = self.sched.submit_samples(&head.tokens, head.max_tokens(), head.arrival_s(), req.n)?;
            for (i, (s, seq)) in group.zip(seqs).enumerate() {
                debug_assert_eq!(s, self.seq_of.len());
                self.seq_of.push(first + i);
                self.pos_of.insert(s, self.live.len());
                self.live_sched.push(s);
                self.live.push(seq);
            }
        }
        self.added += req.n;
        Ok(())
    }

    // ANCHOR: step
    fn step(&mut self) -> Result<StepOutput> {
        let mut out = StepOutput { finished: std::mem::take(&mut self.done), ..Default::default() };
        if self.sched.is_done() {
            return Ok(out);
        }
        let now = self.clock.now_s();
        let plan = self.sched.schedule(now)?;
        let ids: Vec<u64> = plan.preempted.iter().map(|v| self.live[self.pos_of[v]].id).collect();
        self.rec.preempted(&ids);
        if plan.work.is_empty() {
            // Nothing running and nobody has arrived yet: the caller waits for the next arrival.
            return match self.sched.next_arrival() {
                Some(t) if t > now => Ok(out),
                _ => Err(ModelError::InvalidSettings("the block scheduler made no progress".into())),
            };
        }
        let tables = plan.work.iter().map(|w| self.sched.table(w.seq).to_vec()).collect();
        let spans = spans_of(&self.live, &self.pos_of, &plan.work)?;
        if !plan.copies.is_empty() {
            self.runner.copy_blocks(&plan.copies)?; // before anyone writes into the copied blocks
        }
        self.runner.step(&mut self.live, &spans, tables, &self.clock, &self.opts)?;
        out.ran = true;
        let ids: Vec<u64> = spans.iter().map(|s| self.live[s.seq].id).collect();
        self.rec.record(&plan.work, &self.sched, &ids, self.clock.now_s());
        // Finished sequences give their blocks back now; the others record their new token.
        let mut finished = Vec::new();
        for (w, span) in plan.work.iter().zip(&spans) {
            let seq = &self.live[span.seq];
            let token = seq.tokens[seq.tokens.len() - 1];
            out.tokens.push(NewToken { id: seq.id, sample: seq.sample, token });
            match seq.is_finished() {
                true => finished.push(w.seq),
                false => self.sched.append(w.seq, token)?,
            }
        }
        for s in finished {
            self.sched.finish(s)?;
            let seq = self.remove(s)?;
            out.finished.push((self.seq_of[s], seq.into_output()));
        }
        Ok(out)
    }
    // ANCHOR_END: step

    // ANCHOR: abort
    fn abort(&mut self, id: u64) -> Result<bool> {
        let before = self.done.len();
        self.done.retain(|(_, o)| o.id != id);
        let mine: Vec<usize> = self.live_sched.iter().copied().filter(|&s| self.live[self.pos_of[&s]].id == id).collect();
        for &s in &mine {
            self.sched.abort(s)?; // its blocks are free before the next step
            self.remove(s)?;
        }
        Ok(!mine.is_empty() || self.done.len() < before)
    }
    // ANCHOR_END: abort

    fn has_unfinished(&self) -> bool {
        !self.sched.is_done() || !self.done.is_empty()
    }

    fn next_arrival(&self) -> Option<f64> {
        self.sched.next_arrival()
    }

    fn load(&self) -> EngineLoad {
        EngineLoad {
            running: self.sched.running().len(),
            waiting: self.sched.num_waiting(),
            kv_units_used: self.sched.blocks_used(),
            kv_units_total: self.sched.config().num_blocks,
            preemptions: self.sched.stats.preemptions,
        }
    }

    fn max_len(&self) -> usize {
        self.max_len
    }
}

// ANCHOR: spans
/// The step's spans: work item i feeds its sequence from `start` and uses block table i.
fn spans_of(live: &[Sequence], pos_of: &HashMap<usize, usize>, work: &[Work]) -> Result<Vec<Span>> {
    let mut spans = Vec::with_capacity(work.len());
    for (i, w) in work.iter().enumerate() {
        let seq = *pos_of.get(&w.seq).ok_or_else(|| ModelError::InvalidBatch(format!("sequence {} is not live", w.seq)))?;
        // The scheduler always schedules a sequence up to its newest token.
        if w.start + w.len != live[seq].tokens.len() {
            return Err(ModelError::InvalidBatch(format!("work for sequence {} stops short of its end", w.seq)));
        }
        spans.push(Span { seq, slot: i, start: w.start, padding: false });
    }
    Ok(spans)
}
// ANCHOR_END: spans

/// Run-level accounting for the paged engine: blocks and tokens held per step, and the trace.
struct BlockRecorder {
    block_bytes: u64,
    token_bytes: u64,
    pool_bytes: u64,
    num_blocks: usize,
    steps: usize,
    rows: usize,
    token_rows: u64,
    blocks_used_sum: usize,
    peak_kv_used: u64,
    info: BlockRunInfo,
    trace: Option<Vec<TraceStep>>,
}

impl BlockRecorder {
    fn new(config: &LlamaConfig, dtype: DType, cfg: SchedulerConfig, trace: bool) -> Self {
        let token_bytes = kv_bytes_per_token(config, dtype);
        let block_bytes = cfg.block_size as u64 * token_bytes;
        BlockRecorder {
            block_bytes,
            token_bytes,
            pool_bytes: cfg.num_blocks as u64 * block_bytes,
            num_blocks: cfg.num_blocks,
            steps: 0,
            rows: 0,
            token_rows: 0,
            blocks_used_sum: 0,
            peak_kv_used: 0,
            info: BlockRunInfo { num_blocks: cfg.num_blocks, block_size: cfg.block_size, ..Default::default() },
            trace: trace.then(Vec::new),
        }
    }

    /// `ids`: the request of each sequence preempted this step.
    fn preempted(&mut self, ids: &[u64]) {
        for &id in ids {
            self.info.preempted.push((self.steps, id));
        }
    }

    /// Books one step, before finished sequences give their blocks back: what the step held.
    /// `ids`: the request of each work item.
    fn record(&mut self, work: &[Work], sched: &BlockScheduler, ids: &[u64], t_s: f64) {
        let (held_blocks, held_tokens) = (sched.blocks_used(), sched.tokens_held());
        self.steps += 1;
        self.rows += work.len();
        self.token_rows += work.iter().map(|w| w.len as u64).sum::<u64>();
        self.blocks_used_sum += held_blocks;
        self.info.blocks_used.push(held_blocks);
        let kv_used = held_tokens as u64 * self.token_bytes;
        self.peak_kv_used = self.peak_kv_used.max(kv_used);
        if let Some(trace) = &mut self.trace {
            let entries = work
                .iter()
                .enumerate()
                .zip(ids)
                .map(|((i, w), &request)| TraceEntry {
                    slot: i,
                    request,
                    phase: if w.prefill { Phase::Prefill } else { Phase::Decode },
                    tokens: w.len,
                })
                .collect();
            let kv_bytes_allocated = held_blocks as u64 * self.block_bytes;
            trace.push(TraceStep { step: self.steps - 1, t_s, entries, kv_bytes_allocated, kv_bytes_used: kv_used });
        }
    }

    /// `seq_of`: scheduler index -> position in `outputs`.
    fn finish(
        mut self,
        outputs: Vec<RequestOutput>,
        sched: &BlockScheduler,
        seq_of: &[usize],
        wall_s: f64,
    ) -> (RunOutput, BlockRunInfo) {
        let steps = self.steps.max(1) as f64;
        let mut per_seq = vec![0; outputs.len()];
        for (s, &q) in seq_of.iter().enumerate() {
            if let (Some(slot), Some(&peak)) = (per_seq.get_mut(q), sched.stats.peak_blocks_per_seq.get(s)) {
                *slot = peak;
            }
        }
        self.info.peak_blocks_per_request = per_seq;
        self.info.scheduler = sched.stats.clone();
        let stats = RunStats {
            wall_s,
            steps: self.steps,
            token_rows: self.token_rows,
            mean_batch_size: self.rows as f64 / steps,
            kv_bytes_allocated: self.pool_bytes,
            kv_bytes_used: self.peak_kv_used,
            peak_running: sched.stats.peak_running,
            // Not slots: the share of the pool's blocks holding tokens, averaged over steps.
            slot_utilisation: self.blocks_used_sum as f64 / (steps * self.num_blocks as f64),
            preemptions: sched.stats.preemptions,
            ..RunStats::default()
        };
        (RunOutput::from_outputs(outputs, stats, self.trace.unwrap_or_default()), self.info)
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CpuRunner, PagedBackend, PagedEngine, PagedKvPool};
    use ch00_model::{Model, SamplingParams};
    use ch00_serving::Engine;

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
        assert_eq!(e.load(), EngineLoad { kv_units_total: 8, ..Default::default() });
        // A bad request is refused and changes nothing.
        assert!(e.add_request(&Request::greedy(3, vec![], 4)).is_err());
        assert!(e.add_request(&req(4, 1, 100)).is_err(), "more blocks than the pool");
        assert!(!e.has_unfinished());
    }
}
