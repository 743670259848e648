//! What every paged engine shares: the scheduling loop. A [`PagedRunner`] runs the model over the
//! step's spans, reading and writing K/V through block tables; chapter 5's runner is the CPU model
//! over [`crate::PagedKvPool`], chapter 6's is the GPU. The loop, the block scheduler and the
//! bookkeeping are this one implementation for both.

use crate::allocator::BlockId;
use crate::engine::BlockRunInfo;
use crate::scheduler::{BlockScheduler, SchedulerConfig, Work};
use ch00_model::{
    kv_bytes_per_token, sequences, Clock, DType, LlamaConfig, ModelError, Phase, Request, Result, RunOptions, RunOutput,
    RunStats, Sequence, Span, TraceEntry, TraceStep,
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

/// Serves `requests` on a pool of `cfg.num_blocks` blocks: chapter 4's loop, with the block
/// scheduler deciding who runs and `runner` running them.
pub fn run_paged(
    runner: &mut dyn PagedRunner,
    cfg: SchedulerConfig,
    max_len: usize,
    requests: &[Request],
    opts: &RunOptions,
) -> Result<(RunOutput, BlockRunInfo)> {
    let config = runner.config().clone();
    let mut sched = BlockScheduler::new(cfg)?;
    let mut seqs = sequences(&config, requests, max_len)?; // n per request, one after the other
    let mut req_of = Vec::new(); // scheduler index -> sequence index
    let mut first = 0; // the first sequence of each request
    for req in requests {
        let seq = &seqs[first];
        if !seq.is_finished() {
            // The request's samples share its prompt's blocks (copy-on-write).
            sched.submit_samples(&seq.tokens, seq.max_tokens(), seq.arrival_s(), req.n)?;
            req_of.extend(first..first + req.n);
        }
        first += req.n;
    }
    let mut rec = BlockRecorder::new(&config, runner.kv_dtype(), cfg, seqs.len(), opts.trace);
    let clock = Clock::start();
    // ANCHOR: loop
    while !sched.is_done() {
        let now = clock.now_s();
        let plan = sched.schedule(now)?;
        rec.preempted(&plan.preempted, &req_of, &seqs);
        if plan.work.is_empty() {
            // Nothing running and nobody has arrived yet: sleep until the next arrival.
            match sched.next_arrival() {
                Some(t) if t > now => clock.wait_until(t),
                _ => return Err(ModelError::InvalidSettings("the block scheduler made no progress".into())),
            }
            continue;
        }
        let tables = plan.work.iter().map(|w| sched.table(w.seq).to_vec()).collect();
        let spans = spans_of(&seqs, &req_of, &plan.work)?;
        if !plan.copies.is_empty() {
            runner.copy_blocks(&plan.copies)?; // before anyone writes into the copied blocks
        }
        runner.step(&mut seqs, &spans, tables, &clock, opts)?;
        rec.record(&plan.work, &sched, &seqs, &req_of, clock.now_s());
        // Finished sequences give their blocks back now; the others record their new token.
        for w in &plan.work {
            let seq = &seqs[req_of[w.seq]];
            match seq.is_finished() {
                true => sched.finish(w.seq)?,
                false => sched.append(w.seq, seq.tokens[seq.tokens.len() - 1])?,
            }
        }
    }
    // ANCHOR_END: loop
    Ok(rec.finish(seqs, &sched, &req_of, clock.now_s()))
}

// ANCHOR: step
/// The step's spans: work item i feeds its sequence from `start` and uses block table i.
fn spans_of(seqs: &[Sequence], req_of: &[usize], work: &[Work]) -> Result<Vec<Span>> {
    let mut spans = Vec::with_capacity(work.len());
    for (i, w) in work.iter().enumerate() {
        let seq = req_of[w.seq];
        // The scheduler always schedules a sequence up to its newest token.
        if w.start + w.len != seqs[seq].tokens.len() {
            return Err(ModelError::InvalidBatch(format!("work for sequence {seq} stops short of its end")));
        }
        spans.push(Span { seq, slot: i, start: w.start, padding: false });
    }
    Ok(spans)
}
// ANCHOR_END: step

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
    n_seqs: usize,
}

impl BlockRecorder {
    fn new(config: &LlamaConfig, dtype: DType, cfg: SchedulerConfig, n_seqs: usize, trace: bool) -> Self {
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
            n_seqs,
        }
    }

    fn preempted(&mut self, victims: &[usize], req_of: &[usize], seqs: &[Sequence]) {
        for &v in victims {
            self.info.preempted.push((self.steps, seqs[req_of[v]].id));
        }
    }

    /// Books one step, before finished sequences give their blocks back: what the step held.
    fn record(&mut self, work: &[Work], sched: &BlockScheduler, seqs: &[Sequence], req_of: &[usize], t_s: f64) {
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
                .map(|(i, w)| TraceEntry {
                    slot: i,
                    request: seqs[req_of[w.seq]].id,
                    phase: if w.prefill { Phase::Prefill } else { Phase::Decode },
                    tokens: w.len,
                })
                .collect();
            let kv_bytes_allocated = held_blocks as u64 * self.block_bytes;
            trace.push(TraceStep { step: self.steps - 1, t_s, entries, kv_bytes_allocated, kv_bytes_used: kv_used });
        }
    }

    fn finish(
        mut self,
        seqs: Vec<Sequence>,
        sched: &BlockScheduler,
        req_of: &[usize],
        wall_s: f64,
    ) -> (RunOutput, BlockRunInfo) {
        let steps = self.steps.max(1) as f64;
        let mut per_seq = vec![0; self.n_seqs];
        for (s, &q) in req_of.iter().enumerate() {
            per_seq[q] = sched.stats.peak_blocks_per_seq[s];
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
        (RunOutput::from_sequences(seqs, stats, self.trace.unwrap_or_default()), self.info)
    }
}

