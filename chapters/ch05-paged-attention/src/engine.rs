//! The chapter-5 engine: chapter 4's loop, with a block pool instead of slots. Every step the block
//! scheduler says which tokens to compute (prefills, recomputes after preemption, one-token
//! decodes); the model runs once over all of them, writing and reading K/V through block tables.
//! The loop itself is [`crate::runner::run_paged`]; this file sizes the pool and runs the CPU model.

use crate::block_table::BlockId;
use crate::backend::PagedBackend;
use crate::kv_pool::PagedKvPool;
use crate::runner::{run_paged, PagedCore, PagedRunner};
use crate::scheduler::{SchedulerConfig, SchedulerStats};
use ch04_continuous_batching::default_max_tokens_per_step;
use ch00_model::{kv_bytes_per_token, DType, LlamaConfig, Model, ModelError, Result};
use ch00_serving::{
    resolve_max_len, run_spans, Clock, Engine, Request, RunOptions, RunOutput, SeqTable, Span, StepEngine,
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
    /// Prefix caching: share full blocks between equal prefixes and keep a finished request's
    /// until the pool needs them. On by default, as in vLLM V1 (false is `--no-prefix-caching`).
    pub prefix_sharing: bool,
    /// Most sequences running at once; `None` means chapter 4's default for the same memory: one
    /// per `max_len`-token slot the pool's bytes would make (at least 1). Lift it to let the pool
    /// alone decide how many run, as the capacity experiment does.
    pub max_running: Option<usize>,
    /// Most tokens per step (vLLM's `max_num_batched_tokens`); `None` means chapter 4's default,
    /// `max(max_len, 2048)`.
    pub max_tokens_per_step: Option<usize>,
    /// Chunked prefill: prompts fill what the step's token budget leaves after the decodes, in
    /// chunks (see `SchedulerConfig::chunked_prefill`). On by default, as in vLLM V1 (false is
    /// `--no-chunked-prefill`).
    pub chunked_prefill: bool,
    /// The block scheduler's counters of the last run (filled by [`Engine::run`]).
    pub last_run: Option<SchedulerStats>,
}

impl Default for PagedEngine {
    /// The memory of chapter 4's default (8 slots), in blocks of 16 tokens.
    fn default() -> Self {
        PagedEngine {
            budget: KvBudget::Slots(8),
            block_size: 16,
            max_len: None,
            watermark_blocks: None,
            prefix_sharing: true,
            max_running: None,
            max_tokens_per_step: None,
            chunked_prefill: true,
            last_run: None,
        }
    }
}

impl PagedEngine {
    /// The scheduler settings these engine settings give for `model`, and the maximum length.
    pub fn scheduler_config(&self, model: &Model) -> Result<(SchedulerConfig, usize)> {
        self.scheduler_config_for(&model.config)
    }

    /// The same, from the model's config alone (chapter 6 runs models that never exist on the CPU).
    pub fn scheduler_config_for(&self, config: &LlamaConfig) -> Result<(SchedulerConfig, usize)> {
        let max_len = resolve_max_len(config, self.max_len)?;
        let bs = self.block_size;
        let per_token = kv_bytes_per_token(config, DType::F32);
        let num_blocks = match self.budget {
            KvBudget::Blocks(n) => n,
            KvBudget::KvBytes(bytes) => blocks_for_budget(config, bs, bytes, DType::F32)?,
            KvBudget::Slots(n) => {
                blocks_for_budget(config, bs, n as u64 * max_len as u64 * per_token, DType::F32)?
            }
        };
        Ok((self.pool_config(num_blocks, max_len), max_len))
    }

    /// The scheduler settings for a pool of `num_blocks` blocks (chapter 6 sizes its pool on the
    /// card, after loading the weights) and sequences of up to `max_len` tokens.
    pub fn pool_config(&self, num_blocks: usize, max_len: usize) -> SchedulerConfig {
        let bs = self.block_size;
        // ANCHOR: limits
        // Chapter 4's limits, with chapter 4's defaults for the same memory and max_len.
        let slots_of_memory = (num_blocks * bs / max_len.max(1)).max(1);
        SchedulerConfig {
            watermark_blocks: self.watermark_blocks.unwrap_or(num_blocks / 100),
            prefix_sharing: self.prefix_sharing,
            max_running: self.max_running.unwrap_or(slots_of_memory),
            max_tokens_per_step: self.max_tokens_per_step.unwrap_or(default_max_tokens_per_step(max_len)),
            chunked_prefill: self.chunked_prefill,
            ..SchedulerConfig::new(num_blocks, bs)
        }
        // ANCHOR_END: limits
    }
}

impl Engine for PagedEngine {
    fn name(&self) -> &'static str {
        "ch05-paged-attention"
    }

    fn run(&mut self, model: &Model, requests: &[Request], opts: &RunOptions) -> Result<RunOutput> {
        let (cfg, max_len) = self.scheduler_config(model)?;
        let pool = PagedKvPool::new(&model.config, cfg.num_blocks, cfg.block_size)?;
        let mut runner = CpuRunner { model, backend: PagedBackend { pool, tables: Vec::new() } };
        let (out, info) = run_paged(&mut runner, cfg, max_len, requests, opts)?;
        self.last_run = Some(info);
        Ok(out)
    }

    fn stepper<'m>(&self, model: &'m Model) -> Result<Box<dyn StepEngine + 'm>> {
        let (cfg, max_len) = self.scheduler_config(model)?;
        let pool = PagedKvPool::new(&model.config, cfg.num_blocks, cfg.block_size)?;
        let runner = CpuRunner { model, backend: PagedBackend { pool, tables: Vec::new() } };
        Ok(Box::new(PagedCore::new(runner, cfg, max_len, RunOptions::default())?))
    }
}

// ANCHOR: cpu_runner
/// Chapter 5's runner: the CPU model over the paged pool.
pub struct CpuRunner<'m> {
    pub model: &'m Model,
    pub backend: PagedBackend,
}

impl PagedRunner for CpuRunner<'_> {
    fn config(&self) -> &LlamaConfig {
        &self.model.config
    }

    fn kv_dtype(&self) -> DType {
        DType::F32
    }

    fn copy_blocks(&mut self, copies: &[(BlockId, BlockId)]) -> Result<()> {
        copies.iter().try_for_each(|&(src, dst)| self.backend.pool.copy_block(src, dst))
    }

    fn step(
        &mut self,
        seqs: &mut SeqTable,
        spans: &[Span],
        tables: Vec<Vec<BlockId>>,
        clock: &Clock,
        opts: &RunOptions,
    ) -> Result<()> {
        self.backend.tables = tables;
        run_spans(self.model, &mut self.backend, seqs, spans, clock, opts)
    }
}
// ANCHOR_END: cpu_runner

#[cfg(test)]
mod tests {
    use super::*;
    use ch00_serving::Phase;
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
        assert_eq!((want.outputs.len(), got.outputs.len()), (requests.len(), requests.len()));
        for (a, b) in want.outputs.iter().zip(&got.outputs) {
            assert_eq!(a.tokens, b.tokens, "request {} differs from ch04", a.id);
            assert_eq!(a.finish, b.finish);
            assert_eq!((a.logits.len(), b.logits.len()), (a.tokens.len(), b.tokens.len()));
            for (x, y) in a.logits.iter().zip(&b.logits) {
                assert_eq!(x.len(), y.len());
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
        let budget = KvBudget::Blocks(8);
        let mut e = PagedEngine { budget, block_size: 4, max_len: Some(64), max_running: Some(8), ..Default::default() };
        let out = same_as_ch04(&model, &reqs(&[14, 5, 14, 9, 12]), &mut e);
        let info = e.last_run.as_ref().unwrap();
        assert!(out.stats.preemptions > 0, "the tiny pool should force preemption");
        assert_eq!(info.preemptions, out.stats.preemptions);
        assert_eq!(out.trace.iter().map(|t| t.preempted.len()).sum::<usize>(), out.stats.preemptions);
        assert!(out.trace.iter().all(|t| t.kv_bytes_allocated <= 8 * 4 * kv_bytes_per_token(&model.config, DType::F32)));
        assert_eq!(info.peak_blocks_used, 8);
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
        let mut e = PagedEngine {
            budget,
            block_size: 4,
            max_len: Some(64),
            prefix_sharing: true,
            max_running: Some(8),
            ..Default::default()
        };
        let out = same_as_ch04(&model, &reqs(&[8, 6, 7, 8]), &mut e);
        let s = e.last_run.as_ref().unwrap();
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
        assert_eq!(e.last_run.unwrap().peak_blocks_used, 3);
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
