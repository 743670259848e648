//! The chapter-5 engine: chapter 4's loop, with a block pool instead of slots. Every step the block
//! scheduler says which tokens to compute (prefills, recomputes after preemption, one-token
//! decodes); the model runs once over all of them, writing and reading K/V through block tables.

use crate::backend::PagedBackend;
use crate::kv_pool::PagedKvPool;
use crate::scheduler::{BlockScheduler, SchedulerConfig, SchedulerStats, Work};
use ch00_model::{
    kv_bytes_per_token, resolve_max_len, run_spans, Clock, DType, Engine, LlamaConfig, Model, ModelError, Phase, Request, Result,
    RunOptions, RunOutput, RunStats, Sequence, Span, TraceEntry, TraceStep,
};

/// How big the block pool is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvBudget {
    /// Exactly this many blocks.
    Blocks(usize),
    /// As many blocks as fit in this many bytes of f32 KV cache.
    KvBytes(u64),
    /// The memory of this many chapter-4 slots of `max_len` tokens (same bytes, cut finer).
    Slots(usize),
}

// ANCHOR: blocks_for_budget
/// How many blocks of `block_size` tokens fit in `budget_bytes` of KV cache in `dtype`. Errors
/// when not even one block fits.
pub fn blocks_for_budget(config: &LlamaConfig, block_size: usize, budget_bytes: u64, dtype: DType) -> Result<usize> {
    if block_size == 0 {
        return Err(ModelError::InvalidSettings("block_size must be at least 1 token".into()));
    }
    let block_bytes = block_size as u64 * kv_bytes_per_token(config, dtype);
    if budget_bytes < block_bytes {
        return Err(ModelError::InvalidSettings(format!(
            "KV budget of {budget_bytes} bytes is smaller than one block: {block_size} tokens × {} bytes/token = {block_bytes} bytes",
            kv_bytes_per_token(config, dtype)
        )));
    }
    Ok((budget_bytes / block_bytes) as usize)
}
// ANCHOR_END: blocks_for_budget

/// PagedAttention over a pool of fixed-size blocks.
#[derive(Debug, Clone)]
pub struct PagedEngine {
    pub budget: KvBudget,
    /// Tokens per block.
    pub block_size: usize,
    /// Longest sequence (prompt + output); `None` means the model's context, capped at 4096 tokens.
    pub max_len: Option<usize>,
    /// Free blocks kept back at admission; `None` means 1% of the pool.
    pub watermark_blocks: Option<usize>,
    pub prefix_sharing: bool,
    /// What the last run did with its blocks (filled by [`Engine::run`]).
    pub last_run: Option<BlockRunInfo>,
}

impl Default for PagedEngine {
    /// The memory of chapter 4's default (8 slots), in blocks of 16 tokens.
    fn default() -> Self {
        PagedEngine {
            budget: KvBudget::Slots(8),
            block_size: 16,
            max_len: None,
            watermark_blocks: None,
            prefix_sharing: false,
            last_run: None,
        }
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
    /// Most blocks each request held at once, in request order (0 for requests never run).
    pub peak_blocks_per_request: Vec<usize>,
    pub scheduler: SchedulerStats,
}

impl PagedEngine {
    /// The scheduler settings these engine settings give for `model`, and the maximum length.
    pub fn scheduler_config(&self, model: &Model) -> Result<(SchedulerConfig, usize)> {
        let max_len = resolve_max_len(&model.config, self.max_len)?;
        let bs = self.block_size;
        let per_token = kv_bytes_per_token(&model.config, DType::F32);
        let num_blocks = match self.budget {
            KvBudget::Blocks(n) => n,
            KvBudget::KvBytes(bytes) => blocks_for_budget(&model.config, bs, bytes, DType::F32)?,
            KvBudget::Slots(n) => {
                blocks_for_budget(&model.config, bs, n as u64 * max_len as u64 * per_token, DType::F32)?
            }
        };
        let mut cfg = SchedulerConfig::new(num_blocks, bs);
        cfg.watermark_blocks = self.watermark_blocks.unwrap_or(cfg.watermark_blocks);
        cfg.prefix_sharing = self.prefix_sharing;
        Ok((cfg, max_len))
    }
}

impl Engine for PagedEngine {
    fn name(&self) -> &'static str {
        "ch05-paged-attention"
    }

    fn run(&mut self, model: &Model, requests: &[Request], opts: &RunOptions) -> Result<RunOutput> {
        let (cfg, max_len) = self.scheduler_config(model)?;
        let mut sched = BlockScheduler::new(cfg)?;
        let mut seqs = requests.iter().map(|r| Sequence::new(&model.config, r, max_len)).collect::<Result<Vec<_>>>()?;
        let mut req_of = Vec::new(); // scheduler index -> request index
        for (i, (seq, req)) in seqs.iter().zip(requests).enumerate() {
            if !seq.is_finished() {
                let most = (seq.tokens.len() + req.max_new_tokens).min(max_len);
                sched.submit(&seq.tokens, most, req.arrival_s)?;
                req_of.push(i);
            }
        }
        let pool = PagedKvPool::new(&model.config, cfg.num_blocks, cfg.block_size)?;
        let mut rec = BlockRecorder::new(&model.config, &pool, requests.len(), opts.trace);
        let mut backend = PagedBackend { pool, tables: Vec::new() };
        let clock = Clock::start();
        // ANCHOR: loop
        while !sched.is_done() {
            let now = clock.now_s();
            let plan = sched.schedule(now)?;
            rec.preempted(&plan.preempted, &req_of, requests);
            if plan.work.is_empty() {
                // Nothing running and nobody has arrived yet: sleep until the next arrival.
                match sched.next_arrival() {
                    Some(t) if t > now => clock.wait_until(t),
                    _ => return Err(ModelError::InvalidSettings("the block scheduler made no progress".into())),
                }
                continue;
            }
            backend.tables = plan.work.iter().map(|w| sched.table(w.seq).to_vec()).collect();
            paged_step(model, &mut backend, &mut seqs, &req_of, &plan.work, &clock, opts)?;
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
        let (out, info) = rec.finish(seqs, &sched, &req_of, clock.now_s());
        self.last_run = Some(info);
        Ok(out)
    }
}

// ANCHOR: step
/// One forward pass over every scheduled span; span i of the step uses `backend.tables[i]`.
fn paged_step(
    model: &Model,
    backend: &mut PagedBackend,
    seqs: &mut [Sequence],
    req_of: &[usize],
    work: &[Work],
    clock: &Clock,
    opts: &RunOptions,
) -> Result<()> {
    let mut spans = Vec::with_capacity(work.len());
    for (i, w) in work.iter().enumerate() {
        let seq = req_of[w.seq];
        // The scheduler always schedules a sequence up to its newest token.
        if w.start + w.len != seqs[seq].tokens.len() {
            return Err(ModelError::InvalidBatch(format!("work for sequence {seq} stops short of its end")));
        }
        spans.push(Span { seq, slot: i, start: w.start });
    }
    run_spans(model, backend, seqs, &spans, clock, opts)
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
    blocks_used_sum: usize,
    peak_kv_used: u64,
    info: BlockRunInfo,
    trace: Option<Vec<TraceStep>>,
    n_requests: usize,
}

impl BlockRecorder {
    fn new(config: &LlamaConfig, pool: &PagedKvPool, n_requests: usize, trace: bool) -> Self {
        BlockRecorder {
            block_bytes: pool.block_bytes(),
            token_bytes: kv_bytes_per_token(config, DType::F32),
            pool_bytes: pool.bytes_allocated(),
            num_blocks: pool.num_blocks(),
            steps: 0,
            rows: 0,
            blocks_used_sum: 0,
            peak_kv_used: 0,
            info: BlockRunInfo { num_blocks: pool.num_blocks(), block_size: pool.block_size(), ..Default::default() },
            trace: trace.then(Vec::new),
            n_requests,
        }
    }

    fn preempted(&mut self, victims: &[usize], req_of: &[usize], requests: &[Request]) {
        for &v in victims {
            self.info.preempted.push((self.steps, requests[req_of[v]].id));
        }
    }

    /// Books one step, before finished sequences give their blocks back: what the step held.
    fn record(&mut self, work: &[Work], sched: &BlockScheduler, seqs: &[Sequence], req_of: &[usize], t_s: f64) {
        let (held_blocks, held_tokens) = (sched.blocks_used(), sched.tokens_held());
        self.steps += 1;
        self.rows += work.len();
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
        let mut per_request = vec![0; self.n_requests];
        for (s, &r) in req_of.iter().enumerate() {
            per_request[r] = sched.stats.peak_blocks_per_seq[s];
        }
        self.info.peak_blocks_per_request = per_request;
        self.info.scheduler = sched.stats.clone();
        let stats = RunStats {
            wall_s,
            steps: self.steps,
            mean_batch_size: self.rows as f64 / steps,
            kv_bytes_allocated: self.pool_bytes,
            kv_bytes_used: self.peak_kv_used,
            peak_running: sched.stats.peak_running,
            // Blocks in use / blocks in the pool, averaged over steps.
            slot_utilisation: self.blocks_used_sum as f64 / (steps * self.num_blocks as f64),
            preemptions: sched.stats.preemptions,
            ..RunStats::default()
        };
        (RunOutput::from_sequences(seqs, stats, self.trace.unwrap_or_default()), self.info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ch04_continuous_batching::{ContinuousBatchEngine, SlotBudget};

    fn tiny() -> Model {
        Model::random(LlamaConfig::named("tiny").unwrap(), 0).unwrap()
    }

    /// Requests with a shared 9-token "system prompt", then their own tokens.
    fn reqs(outputs: &[usize]) -> Vec<Request> {
        let system = [1u32, 40, 41, 42, 43, 44, 45, 46, 47];
        let prompt = |i: usize| [&system[..], &[100 + i as u32, 7, 9][..i % 3 + 1]].concat();
        let req = |i: usize, n: usize| Request { ignore_eos: true, ..Request::greedy(i as u64, prompt(i), n) };
        outputs.iter().enumerate().map(|(i, &n)| req(i, n)).collect()
    }

    fn same_as_ch04(model: &Model, requests: &[Request], paged: &mut PagedEngine) -> RunOutput {
        let opts = RunOptions { record_logits: true, trace: true };
        let mut ch04 = ContinuousBatchEngine { slots: SlotBudget::Slots(3), max_len: Some(64), ..Default::default() };
        let want = ch04.run(model, requests, &opts).unwrap();
        let got = paged.run(model, requests, &opts).unwrap();
        for (a, b) in want.outputs.iter().zip(&got.outputs) {
            assert_eq!(a.tokens, b.tokens, "request {} differs from ch04", a.id);
            assert_eq!(a.finish, b.finish);
            for (x, y) in a.logits.iter().zip(&b.logits) {
                let d = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
                assert!(d < 1e-4, "request {}: logits differ by {d}", a.id);
            }
        }
        got
    }

    #[test]
    fn same_tokens_as_ch04_with_room_to_spare() {
        let model = tiny();
        let mut e = PagedEngine { block_size: 4, max_len: Some(64), ..Default::default() };
        let out = same_as_ch04(&model, &reqs(&[9, 1, 14, 3, 6, 11]), &mut e);
        assert_eq!((out.stats.preemptions, out.stats.peak_running), (0, 6));
        assert_eq!(out.stats.generated_tokens, 44);
    }

    #[test]
    fn same_tokens_as_ch04_under_preemption() {
        // 8 blocks of 4 tokens: two requests of 10 + 14 tokens already need 7, so the pool runs
        // dry mid-decode and the youngest requests are evicted and recomputed.
        let model = tiny();
        let mut e = PagedEngine { budget: KvBudget::Blocks(8), block_size: 4, max_len: Some(64), ..Default::default() };
        let out = same_as_ch04(&model, &reqs(&[14, 5, 14, 9, 12]), &mut e);
        let info = e.last_run.as_ref().unwrap();
        assert!(out.stats.preemptions > 0, "the tiny pool should force preemption");
        assert_eq!(info.preempted.len(), out.stats.preemptions);
        assert!(info.blocks_used.iter().all(|&b| b <= 8));
        assert_eq!(info.scheduler.peak_blocks_used, 8);
        // A preempted request is prefilled again: more prefill entries than requests.
        let prefills = out.trace.iter().flat_map(|s| &s.entries).filter(|e| e.phase == Phase::Prefill).count();
        assert_eq!(prefills, 5 + out.stats.preemptions);
    }

    #[test]
    fn same_tokens_as_ch04_with_prefix_sharing() {
        // 5 blocks of 4: request 0 takes 3, so request 1 waits a step; by then request 0's two
        // full system-prompt blocks are written and named, and request 1 shares them.
        let model = tiny();
        let budget = KvBudget::Blocks(5);
        let mut e =
            PagedEngine { budget, block_size: 4, max_len: Some(64), prefix_sharing: true, ..Default::default() };
        let out = same_as_ch04(&model, &reqs(&[8, 6, 7, 8]), &mut e);
        let s = &e.last_run.as_ref().unwrap().scheduler;
        assert!(s.prefix_hit_tokens >= 8, "hits: {} of {}", s.prefix_hit_tokens, s.prefix_query_tokens);
        assert!(s.prefix_hit_rate() > 0.0 && s.prefix_hit_rate() < 1.0);
        // Without sharing the same pool holds fewer requests at once.
        let mut plain = PagedEngine { prefix_sharing: false, ..e.clone() };
        let base = same_as_ch04(&model, &reqs(&[8, 6, 7, 8]), &mut plain);
        assert!(out.stats.mean_batch_size > base.stats.mean_batch_size);
    }

    #[test]
    fn trace_counts_blocks_and_tokens() {
        let model = tiny();
        let mut e = PagedEngine { block_size: 4, max_len: Some(64), ..Default::default() };
        let out = e.run(&model, &reqs(&[3]), &RunOptions { trace: true, ..Default::default() }).unwrap();
        let block = 4 * kv_bytes_per_token(&model.config, DType::F32);
        let per_token = kv_bytes_per_token(&model.config, DType::F32);
        // 10-token prompt: 3 blocks, 10 tokens; then 11 (3 blocks), 12 (3 blocks).
        let got: Vec<_> = out.trace.iter().map(|s| (s.kv_bytes_allocated, s.kv_bytes_used)).collect();
        assert_eq!(got, vec![(3 * block, 10 * per_token), (3 * block, 11 * per_token), (3 * block, 12 * per_token)]);
        assert_eq!(out.stats.kv_bytes_used, 12 * per_token);
        assert_eq!(e.last_run.unwrap().peak_blocks_per_request, vec![3]);
    }

    #[test]
    fn a_budget_smaller_than_one_block_or_one_request_is_an_error() {
        let model = tiny();
        let reqs = vec![Request::greedy(0, vec![4, 5, 6], 8)];
        let mut e = PagedEngine { budget: KvBudget::KvBytes(100), ..Default::default() };
        let err = e.run(&model, &reqs, &RunOptions::default()).unwrap_err().to_string();
        assert!(err.contains("smaller than one block"), "{err}");
        let mut e = PagedEngine { budget: KvBudget::Blocks(1), block_size: 4, ..Default::default() };
        assert!(matches!(e.run(&model, &reqs, &RunOptions::default()), Err(ModelError::InvalidSettings(_))));
        let mut e = PagedEngine { block_size: 0, ..Default::default() };
        assert!(e.run(&model, &reqs, &RunOptions::default()).is_err());
    }
}
