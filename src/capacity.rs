//! The capacity experiment of chapter 5: the same KV memory budget and the same workload, served
//! by chapter 4 (contiguous slots reserved for the maximum length) and chapter 5 (blocks on
//! demand). Run twice: for real on the CPU with the `bench` model, and as an accounting run of a
//! 7B-shaped model on an 80 GiB GPU, which drives both real schedulers with no model compute.

use anyhow::{Context, Result};
use ch00_model::{
    kv_bytes_per_token, Arrivals, DType, Engine, LengthDist, LlamaConfig, Model, RunOptions, WorkloadSpec,
};
use ch04_continuous_batching::{ContinuousBatchEngine, SchedulerConfig as SlotConfig, SlotBudget};
use ch05_paged_attention::{
    blocks_for_budget, simulate_blocks, simulate_slots, KvBudget, MemSeries, PagedEngine, SchedulerConfig,
};
use std::path::Path;

const GIB: u64 = 1 << 30;

/// The real CPU run: a random-weight model of a named shape, `slots` contiguous slots' worth of
/// KV memory, and a workload.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RealRunSpec {
    pub config: String,
    pub max_len: usize,
    /// The budget, in slots of `max_len` tokens (chapter 4 gets exactly this many).
    pub slots: usize,
    pub block_size: usize,
    pub workload: WorkloadSpec,
}

impl Default for RealRunSpec {
    /// `bench` model, 4 slots of 256 tokens (16 MiB of f32 KV), 48 chat-like requests all at once
    /// (prompts 16..=64, outputs exponential with mean 32, at most 192: every request fits 256).
    fn default() -> Self {
        RealRunSpec {
            config: "bench".into(),
            max_len: 256,
            slots: 4,
            block_size: 16,
            workload: WorkloadSpec {
                n_requests: 48,
                prompt_len: LengthDist::Uniform { lo: 16, hi: 64 },
                output_len: LengthDist::Exponential { mean: 32.0, min: 4, max: 192 },
                arrivals: Arrivals::AllAtOnce,
                seed: 0,
            },
        }
    }
}

impl RealRunSpec {
    /// The same experiment without the model: an accounting run whose whole "GPU" is this run's
    /// KV budget. Its counts (everything but tokens/s) are the real run's, step for step.
    pub fn as_accounting(&self) -> Result<AccountingSpec> {
        let budget = self.kv_budget(&LlamaConfig::named(&self.config)?);
        Ok(AccountingSpec {
            config: self.config.clone(),
            dtype: "f32".into(),
            gpu_bytes: budget,
            weight_bytes: 0,
            reserve_bytes: 0,
            max_len: self.max_len,
            block_size: self.block_size,
            workload: self.workload.clone(),
        })
    }

    /// The KV budget in bytes: `slots` slots of `max_len` f32 tokens of `config`.
    pub fn kv_budget(&self, config: &LlamaConfig) -> u64 {
        self.slots as u64 * self.max_len as u64 * kv_bytes_per_token(config, DType::F32)
    }

    /// Chapter 4's engine on the budget, with no per-step token limit: memory is the only limit.
    pub fn contiguous_engine(&self, config: &LlamaConfig) -> ContinuousBatchEngine {
        ContinuousBatchEngine {
            slots: SlotBudget::KvBytes(self.kv_budget(config)),
            max_len: Some(self.max_len),
            max_tokens_per_step: Some(usize::MAX),
            ..Default::default()
        }
    }

    /// Chapter 5's engine on the same budget in blocks, with no cap on running sequences or
    /// tokens per step: memory is the only limit.
    pub fn paged_engine(&self, config: &LlamaConfig) -> PagedEngine {
        PagedEngine {
            budget: KvBudget::KvBytes(self.kv_budget(config)),
            block_size: self.block_size,
            max_len: Some(self.max_len),
            max_running: Some(usize::MAX),
            max_tokens_per_step: Some(usize::MAX),
            ..Default::default()
        }
    }
}

/// The accounting run: a model shape and a GPU, no weights and no compute.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AccountingSpec {
    pub config: String,
    pub dtype: String,
    pub gpu_bytes: u64,
    pub weight_bytes: u64,
    /// Activations, CUDA context, allocator slack: memory that is neither weights nor KV.
    pub reserve_bytes: u64,
    pub max_len: usize,
    pub block_size: usize,
    pub workload: WorkloadSpec,
}

impl Default for AccountingSpec {
    /// Llama-2-7B shape in fp16 (512 KiB/token) on an 80 GiB H100: 14 GiB of weights and 2 GiB
    /// kept for activations leave a 64 GiB KV budget. max_len 2048; 2000 requests at once with
    /// prompts uniform 64..=512 and outputs exponential with mean 256, cut at 2048 − 512.
    fn default() -> Self {
        AccountingSpec {
            config: "llama-7b".into(),
            dtype: "f16".into(),
            gpu_bytes: 80 * GIB,
            weight_bytes: 14 * GIB,
            reserve_bytes: 2 * GIB,
            max_len: 2048,
            block_size: 16,
            workload: WorkloadSpec {
                n_requests: 2000,
                prompt_len: LengthDist::Uniform { lo: 64, hi: 512 },
                output_len: LengthDist::Exponential { mean: 256.0, min: 1, max: 2048 - 512 },
                arrivals: Arrivals::AllAtOnce,
                seed: 0,
            },
        }
    }
}

impl AccountingSpec {
    pub fn budget_bytes(&self) -> u64 {
        self.gpu_bytes.saturating_sub(self.weight_bytes + self.reserve_bytes)
    }
}

/// What to run. `real: None` skips the CPU run (tests, quick looks).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapacityOptions {
    pub real: Option<RealRunSpec>,
    pub accounting: AccountingSpec,
    /// Block sizes for the block-size table (accounting run); empty skips it.
    pub block_sizes: Vec<usize>,
    /// Length of the shared system prompt for the prefix-sharing row; `None` skips it.
    pub system_prompt_tokens: Option<usize>,
}

impl CapacityOptions {
    /// Both runs with their defaults, the block sizes 8, 16, 32, 128 and a 256-token system prompt.
    pub fn full() -> Self {
        CapacityOptions {
            real: Some(RealRunSpec::default()),
            accounting: AccountingSpec::default(),
            block_sizes: vec![8, 16, 32, 128],
            system_prompt_tokens: Some(256),
        }
    }
}

/// One design's figures in one run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DesignResult {
    /// Most requests running in one step.
    pub peak_running: usize,
    /// Requests running per step, on average.
    pub mean_running: f64,
    /// Requests running per step while others still waited (memory was the limit).
    pub mean_running_queued: f64,
    /// KV bytes reserved for the running requests, averaged over steps (slots in use × max_len,
    /// or blocks in use × block size).
    pub kv_bytes_allocated: u64,
    /// KV bytes holding real tokens, averaged over steps.
    pub kv_bytes_used: u64,
    /// 100 × (1 − used / allocated): reserved memory that held no token.
    pub waste_pct: f64,
    pub preemptions: usize,
    /// Generated tokens per wall-clock second; `None` in the accounting run.
    pub tokens_per_s: Option<f64>,
    pub steps: usize,
    pub generated_tokens: usize,
    pub peak_kv_bytes_used: u64,
    /// Per step: (x, reserved bytes, used bytes), x in seconds (real run) or steps (accounting).
    #[serde(skip)]
    pub memory: Vec<(f64, u64, u64)>,
}

impl DesignResult {
    fn new(series: &MemSeries, tokens_per_s: Option<f64>, xs: Option<Vec<f64>>) -> Self {
        let xs = xs.unwrap_or_else(|| (0..series.steps.len()).map(|i| i as f64).collect());
        DesignResult {
            peak_running: series.peak_running(),
            mean_running: series.mean_running(),
            mean_running_queued: series.mean_running_queued(),
            kv_bytes_allocated: series.mean_reserved_bytes().round() as u64,
            kv_bytes_used: series.mean_used_bytes().round() as u64,
            waste_pct: series.waste_pct(),
            preemptions: series.preemptions,
            tokens_per_s,
            steps: series.steps.len(),
            generated_tokens: series.generated_tokens,
            peak_kv_bytes_used: series.peak_used_bytes(),
            memory: xs.into_iter().zip(&series.steps).map(|(x, s)| (x, s.reserved_bytes, s.used_bytes)).collect(),
        }
    }
}

/// Both designs under one budget.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CapacityRun {
    pub model: String,
    pub dtype: String,
    pub kv_bytes_per_token: u64,
    pub budget_bytes: u64,
    pub max_len: usize,
    pub block_size: usize,
    pub num_slots: usize,
    pub num_blocks: usize,
    pub n_requests: usize,
    pub contiguous: DesignResult,
    pub paged: DesignResult,
    /// paged.peak_running / contiguous.peak_running.
    pub concurrency_ratio: f64,
    /// paged.mean_running / contiguous.mean_running.
    pub mean_running_ratio: f64,
    /// paged.mean_running_queued / contiguous.mean_running_queued: requests the same memory
    /// holds while demand exceeds it.
    pub queued_running_ratio: f64,
}

impl CapacityRun {
    fn new(head: RunHead, contiguous: DesignResult, paged: DesignResult) -> Self {
        CapacityRun {
            concurrency_ratio: paged.peak_running as f64 / contiguous.peak_running.max(1) as f64,
            mean_running_ratio: paged.mean_running / contiguous.mean_running.max(1e-9),
            queued_running_ratio: paged.mean_running_queued / contiguous.mean_running_queued.max(1e-9),
            model: head.model,
            dtype: head.dtype,
            kv_bytes_per_token: head.per_token,
            budget_bytes: head.budget,
            max_len: head.max_len,
            block_size: head.block_size,
            num_slots: head.slots,
            num_blocks: head.blocks,
            n_requests: head.n_requests,
            contiguous,
            paged,
        }
    }
}

struct RunHead {
    model: String,
    dtype: String,
    per_token: u64,
    budget: u64,
    max_len: usize,
    block_size: usize,
    slots: usize,
    blocks: usize,
    n_requests: usize,
}

/// One row of the block-size table (accounting run).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BlockSizeRow {
    pub block_size: usize,
    pub num_blocks: usize,
    pub peak_running: usize,
    pub mean_running: f64,
    pub mean_running_queued: f64,
    pub waste_pct: f64,
    pub preemptions: usize,
    pub steps: usize,
}

/// Prefix sharing in the accounting run: every prompt starts with the same system prompt.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PrefixRow {
    pub system_prompt_tokens: usize,
    /// Share of admitted prompt tokens found in the prefix cache.
    pub hit_rate: f64,
    /// Mean running requests while others queued: contiguous slots, blocks, blocks with sharing.
    pub contiguous_running_queued: f64,
    pub paged_running_queued: f64,
    pub shared_running_queued: f64,
    pub shared_preemptions: usize,
}

/// The `capacity` section of `kvserve bench --json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CapacityReport {
    pub real: Option<CapacityRun>,
    pub accounting: CapacityRun,
    pub block_sizes: Vec<BlockSizeRow>,
    pub prefix_sharing: Option<PrefixRow>,
}

// ANCHOR: capacity_report
/// Runs the experiment: the real CPU run (if asked), the accounting run, the block-size table and
/// the prefix-sharing row. Builds the real run's model from `opts.real.config`.
pub fn capacity_report(opts: &CapacityOptions) -> Result<CapacityReport> {
    capacity_report_on(None, opts)
}

/// [`capacity_report`] with an already loaded model for the real run (it must have the shape
/// `opts.real.config` names, e.g. the `bench` model the rest of `kvserve bench` uses).
pub fn capacity_report_on(model: Option<&Model>, opts: &CapacityOptions) -> Result<CapacityReport> {
    let real = match (&opts.real, model) {
        (Some(spec), Some(model)) => {
            if model.config != LlamaConfig::named(&spec.config)? {
                anyhow::bail!("the real capacity run names the {:?} shape but was given another model", spec.config);
            }
            Some(real_run(model, spec)?)
        }
        (Some(spec), None) => Some(real_run(&Model::random(LlamaConfig::named(&spec.config)?, 0)?, spec)?),
        (None, _) => None,
    };
    let accounting = accounting_run(&opts.accounting)?;
    let block_sizes = opts.block_sizes.iter().map(|&bs| block_size_row(&opts.accounting, bs)).collect::<Result<_>>()?;
    let prefix_sharing = opts.system_prompt_tokens.map(|n| prefix_row(&opts.accounting, n)).transpose()?;
    Ok(CapacityReport { real, accounting, block_sizes, prefix_sharing })
}
// ANCHOR_END: capacity_report

/// Runs chapter 4's and chapter 5's engines on `model` under the same budget and workload.
pub fn real_run(model: &Model, spec: &RealRunSpec) -> Result<CapacityRun> {
    let per_token = kv_bytes_per_token(&model.config, DType::F32);
    let budget = spec.kv_budget(&model.config);
    let requests = spec.workload.generate(model.config.vocab_size);
    let opts = RunOptions { trace: true, ..Default::default() };

    // Equal limits, as in `slot_config` and `block_config`: none but the memory.
    let mut ch04 = spec.contiguous_engine(&model.config);
    let (slot_cfg, _) = ch04.scheduler_config(model)?;
    let out = ch04.run(model, &requests, &opts).context("chapter 4 engine")?;
    let series =
        MemSeries::from_trace(&out.trace, Some(spec.max_len as u64 * per_token), &[], out.stats.generated_tokens);
    let times = out.trace.iter().map(|t| t.t_s).collect();
    let contiguous = DesignResult::new(&series, Some(out.stats.tokens_per_s), Some(times));

    let mut ch05 = spec.paged_engine(&model.config);
    let (block_cfg, _) = ch05.scheduler_config(model)?;
    let out = ch05.run(model, &requests, &opts).context("chapter 5 engine")?;
    let preempted = ch05.last_run.as_ref().map(|i| i.preempted.clone()).unwrap_or_default();
    let series = MemSeries::from_trace(&out.trace, None, &preempted, out.stats.generated_tokens);
    let times = out.trace.iter().map(|t| t.t_s).collect();
    let paged = DesignResult::new(&series, Some(out.stats.tokens_per_s), Some(times));

    let head = RunHead {
        model: format!("random:{}", spec.config),
        dtype: "f32".into(),
        per_token,
        budget,
        max_len: spec.max_len,
        block_size: spec.block_size,
        slots: slot_cfg.num_slots,
        blocks: block_cfg.num_blocks,
        n_requests: requests.len(),
    };
    Ok(CapacityRun::new(head, contiguous, paged))
}

// ANCHOR: limits
/// Chapter 4's per-step limits as the capacity experiment sets them, equal for both designs: none.
/// Memory is what the experiment measures, so nothing else may decide how many requests run —
/// no cap on running requests beyond what the memory holds (for slots, one per slot, chapter 4's
/// default) and no token budget per step.
pub fn slot_config(num_slots: usize) -> SlotConfig {
    SlotConfig { num_slots, max_running: num_slots, max_tokens_per_step: usize::MAX }
}

/// The block pool's side of [`slot_config`]: no per-step limits (`SchedulerConfig::new`).
pub fn block_config(num_blocks: usize, block_size: usize) -> SchedulerConfig {
    SchedulerConfig::new(num_blocks, block_size)
}
// ANCHOR_END: limits

// ANCHOR: accounting_run
/// Drives chapter 4's slot scheduler and chapter 5's block scheduler with simulated token counts
/// for a model shape on a GPU: no weights, no compute, the same schedulers as the engines.
pub fn accounting_run(spec: &AccountingSpec) -> Result<CapacityRun> {
    let config = LlamaConfig::named(&spec.config)?;
    let dtype = DType::parse(&spec.dtype).with_context(|| format!("unknown dtype {:?}", spec.dtype))?;
    let per_token = kv_bytes_per_token(&config, dtype);
    let budget = spec.budget_bytes();
    let slot_bytes = spec.max_len as u64 * per_token;
    anyhow::ensure!(budget >= slot_bytes, "KV budget of {budget} bytes holds no slot of {slot_bytes} bytes");
    let num_slots = (budget / slot_bytes) as usize;
    let num_blocks = blocks_for_budget(&config, spec.block_size, budget, dtype)?;
    let requests = spec.workload.generate(config.vocab_size);

    let slots = simulate_slots(&requests, slot_config(num_slots), spec.max_len, per_token)?;
    let blocks =
        simulate_blocks(&requests, block_config(num_blocks, spec.block_size), spec.max_len, per_token)?;
    // ANCHOR_END: accounting_run
    let head = RunHead {
        model: format!("{} shape", spec.config),
        dtype: spec.dtype.clone(),
        per_token,
        budget,
        max_len: spec.max_len,
        block_size: spec.block_size,
        slots: num_slots,
        blocks: num_blocks,
        n_requests: requests.len(),
    };
    Ok(CapacityRun::new(head, DesignResult::new(&slots, None, None), DesignResult::new(&blocks, None, None)))
}

/// The accounting run's paged side with another block size.
pub fn block_size_row(spec: &AccountingSpec, block_size: usize) -> Result<BlockSizeRow> {
    let config = LlamaConfig::named(&spec.config)?;
    let dtype = DType::parse(&spec.dtype).with_context(|| format!("unknown dtype {:?}", spec.dtype))?;
    let per_token = kv_bytes_per_token(&config, dtype);
    let num_blocks = blocks_for_budget(&config, block_size, spec.budget_bytes(), dtype)?;
    let requests = spec.workload.generate(config.vocab_size);
    let s = simulate_blocks(&requests, block_config(num_blocks, block_size), spec.max_len, per_token)?;
    Ok(BlockSizeRow {
        block_size,
        num_blocks,
        peak_running: s.peak_running(),
        mean_running: s.mean_running(),
        mean_running_queued: s.mean_running_queued(),
        waste_pct: s.waste_pct(),
        preemptions: s.preemptions,
        steps: s.steps.len(),
    })
}

// ANCHOR: prefix_row
/// The accounting run's workload with the same `system_tokens`-token system prompt in front of
/// every prompt, served by slots, by blocks, and by blocks with prefix sharing.
pub fn prefix_row(spec: &AccountingSpec, system_tokens: usize) -> Result<PrefixRow> {
    let config = LlamaConfig::named(&spec.config)?;
    let dtype = DType::parse(&spec.dtype).with_context(|| format!("unknown dtype {:?}", spec.dtype))?;
    let per_token = kv_bytes_per_token(&config, dtype);
    let system: Vec<u32> =
        (0..system_tokens as u32).map(|t| 3 + t % (config.vocab_size as u32).saturating_sub(3).max(1)).collect();
    let mut requests = spec.workload.generate(config.vocab_size);
    for r in &mut requests {
        r.prompt = [&system[..], &r.prompt[..]].concat();
        r.prompt.truncate(spec.max_len);
    }
    let num_blocks = blocks_for_budget(&config, spec.block_size, spec.budget_bytes(), dtype)?;
    let num_slots = (spec.budget_bytes() / (spec.max_len as u64 * per_token)) as usize;
    let cfg = block_config(num_blocks, spec.block_size);
    let slots = simulate_slots(&requests, slot_config(num_slots), spec.max_len, per_token)?;
    let paged = simulate_blocks(&requests, cfg, spec.max_len, per_token)?;
    let shared = simulate_blocks(&requests, SchedulerConfig { prefix_sharing: true, ..cfg }, spec.max_len, per_token)?;
    Ok(PrefixRow {
        system_prompt_tokens: system_tokens,
        hit_rate: shared.prefix_hit_rate,
        contiguous_running_queued: slots.mean_running_queued(),
        paged_running_queued: paged.mean_running_queued(),
        shared_running_queued: shared.mean_running_queued(),
        shared_preemptions: shared.preemptions,
    })
}
// ANCHOR_END: prefix_row

fn gib(bytes: u64) -> f64 {
    bytes as f64 / GIB as f64
}

/// "64.00 GiB" or "16.00 MiB".
fn human_bytes(b: u64) -> String {
    if b >= GIB {
        format!("{:.2} GiB", gib(b))
    } else {
        format!("{:.2} MiB", b as f64 / (1 << 20) as f64)
    }
}

fn run_table(out: &mut String, title: &str, run: &CapacityRun) {
    use std::fmt::Write;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let _ = writeln!(
        out,
        "### {title}\n\n{} ({}, {} bytes/token), KV budget {} = {} slots of {} tokens = {} blocks of {} tokens, {} requests\n",
        run.model,
        run.dtype,
        run.kv_bytes_per_token,
        human_bytes(run.budget_bytes),
        run.num_slots,
        run.max_len,
        run.num_blocks,
        run.block_size,
        run.n_requests
    );
    let _ = writeln!(out, "| design | peak running | mean running | mean running while queued | KV reserved (mean) | KV holding tokens (mean) | waste | preemptions | steps | tokens/s |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, d) in [("ch04 contiguous slots", &run.contiguous), ("ch05 paged blocks", &run.paged)] {
        let tps = d.tokens_per_s.map_or("—".to_string(), |t| format!("{t:.1}"));
        let _ = writeln!(
            out,
            "| {name} | {} | {:.1} | {:.1} | {:.1} MiB | {:.1} MiB | {:.1}% | {} | {} | {tps} |",
            d.peak_running,
            d.mean_running,
            d.mean_running_queued,
            mib(d.kv_bytes_allocated),
            mib(d.kv_bytes_used),
            d.waste_pct,
            d.preemptions,
            d.steps
        );
    }
    let _ = writeln!(
        out,
        "\nPaged / contiguous: {:.2}× peak concurrent requests, {:.2}× mean running batch, {:.2}× while requests queued.\n",
        run.concurrency_ratio, run.mean_running_ratio, run.queued_running_ratio
    );
}

/// The report as Markdown tables (what `kvserve bench` prints and the book quotes).
pub fn to_markdown(r: &CapacityReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if let Some(real) = &r.real {
        run_table(&mut out, "Real run (CPU)", real);
    }
    run_table(&mut out, "Accounting run (no model compute)", &r.accounting);
    if let Some(p) = &r.prefix_sharing {
        let _ = writeln!(
            out,
            "### Prefix sharing (accounting run, every prompt after the same {}-token system prompt)\n",
            p.system_prompt_tokens
        );
        let _ = writeln!(out, "| design | mean running while queued |");
        let _ = writeln!(out, "|---|---:|");
        let _ = writeln!(out, "| ch04 contiguous slots | {:.1} |", p.contiguous_running_queued);
        let _ = writeln!(out, "| ch05 paged blocks | {:.1} |", p.paged_running_queued);
        let _ = writeln!(out, "| ch05 paged blocks + prefix sharing | {:.1} |", p.shared_running_queued);
        let _ = writeln!(
            out,
            "\nPrefix-cache hit rate: {:.1}% of admitted prompt tokens; {} preemptions with sharing.\n",
            100.0 * p.hit_rate,
            p.shared_preemptions
        );
    }
    if !r.block_sizes.is_empty() {
        let _ = writeln!(out, "### Block size (accounting run)\n");
        let _ = writeln!(out, "| block size | blocks | peak running | mean running | mean running while queued | waste | preemptions | steps |");
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|");
        for b in &r.block_sizes {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {:.1} | {:.1}% | {} | {} |",
                b.block_size,
                b.num_blocks,
                b.peak_running,
                b.mean_running,
                b.mean_running_queued,
                b.waste_pct,
                b.preemptions,
                b.steps
            );
        }
    }
    out
}

/// The claims chapter 5 tests, as sentences with the numbers of this report.
pub fn claims_markdown(r: &CapacityReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let a = &r.accounting;
    let (c, p) = (&a.contiguous, &a.paged);
    let _ = writeln!(
        out,
        "- **More concurrent requests in the same memory** (the seed's claim: 2–4×). In the {} accounting run, while requests queued — memory, not demand, the limit — chapter 4 ran {:.1} requests on average and chapter 5 ran {:.1}: **{:.2}×**. Over the whole run, drain included, the mean running batch is {:.2}× larger; at the peak, {} against {} ({:.2}×).",
        a.model, c.mean_running_queued, p.mean_running_queued, a.queued_running_ratio, a.mean_running_ratio, p.peak_running, c.peak_running, a.concurrency_ratio
    );
    let _ = writeln!(
        out,
        "- **KV memory holding tokens** (the vLLM paper measured 20–38% for systems that reserve the maximum length). Chapter 4's slots held tokens in **{:.1}%** of the memory they reserved; chapter 5's blocks in **{:.1}%** — {:.1}% waste, with {} preemptions for {} requests.",
        100.0 - c.waste_pct, 100.0 - p.waste_pct, p.waste_pct, p.preemptions, a.n_requests
    );
    if let Some(x) = &r.prefix_sharing {
        let _ = writeln!(
            out,
            "- **Prefix sharing.** With the same {}-token system prompt ahead of every prompt, the requests running while others queued were {:.1} in slots, {:.1} in blocks, and **{:.1}** in blocks with prefix sharing; the prefix cache served {:.1}% of all admitted prompt tokens.",
            x.system_prompt_tokens, x.contiguous_running_queued, x.paged_running_queued, x.shared_running_queued, 100.0 * x.hit_rate
        );
    }
    if let Some(real) = &r.real {
        let (c, p) = (&real.contiguous, &real.paged);
        let tps = match (c.tokens_per_s, p.tokens_per_s) {
            (Some(ct), Some(pt)) => format!("; throughput {pt:.1} against {ct:.1} tokens/s ({:.2}×)", pt / ct),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "- **On the CPU ({}, {} requests).** {:.1} against {:.1} requests running while others queued ({:.2}×); {:.1}% against {:.1}% waste; {} preemptions{tps}.",
            real.model, real.n_requests, p.mean_running_queued, c.mean_running_queued, real.queued_running_ratio, p.waste_pct, c.waste_pct, p.preemptions
        );
    }
    out
}

/// Writes the KV-memory-over-time figures: `capacity-real.svg` (if the real run was made) and
/// `capacity-accounting.svg` into `dir`. Returns the paths written.
pub fn write_capacity_figures(r: &CapacityReport, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    if let Some(real) = &r.real {
        let path = dir.join("capacity-real.svg");
        let title =
            format!("KV memory over time, {} on CPU ({} KV budget)", real.model, human_bytes(real.budget_bytes));
        write_memory_figure(real, &path, &title, "seconds")?;
        written.push(path);
    }
    let path = dir.join("capacity-accounting.svg");
    let a = &r.accounting;
    let title =
        format!("KV memory per step, {} {} on 80 GiB ({:.0} GiB KV budget)", a.model, a.dtype, gib(a.budget_bytes));
    write_memory_figure(a, &path, &title, "step")?;
    written.push(path);
    Ok(written)
}

// ANCHOR: figure
/// Reserved and used KV memory of both designs against time (or step), with the budget line.
pub fn write_memory_figure(run: &CapacityRun, path: &Path, title: &str, x_desc: &str) -> Result<()> {
    use plotters::prelude::*;
    // GiB for GPU-sized budgets, MiB for the CPU run's few megabytes.
    let (unit, unit_name) = if run.budget_bytes >= GIB { (GIB as f64, "GiB") } else { ((1u64 << 20) as f64, "MiB") };
    let to_gib = |b: u64| b as f64 / unit;
    let x_max = [&run.contiguous, &run.paged].iter().flat_map(|d| d.memory.last()).map(|m| m.0).fold(1e-9, f64::max);
    let y_max = to_gib(run.budget_bytes) * 1.45; // headroom for the legend
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(plot_err)?;
    let y_desc = format!("KV memory ({unit_name})");
    chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw().map_err(plot_err)?;
    let budget = to_gib(run.budget_bytes);
    chart
        .draw_series(LineSeries::new(vec![(0.0, budget), (x_max, budget)], BLACK.stroke_width(1)))
        .map_err(plot_err)?
        .label("KV budget")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    let lines = [
        (&run.contiguous, RGBColor(200, 40, 40), "ch04 contiguous: reserved"),
        (&run.paged, RGBColor(30, 90, 200), "ch05 paged: reserved"),
    ];
    for (design, color, label) in lines {
        // At most ~600 points a line: the SVG stays small and looks the same.
        let every = design.memory.len().div_ceil(600).max(1);
        let points: Vec<_> = design.memory.iter().step_by(every).chain(design.memory.last()).copied().collect();
        let reserved = points.iter().map(|&(x, r, _)| (x, to_gib(r)));
        chart
            .draw_series(LineSeries::new(reserved, color.stroke_width(2)))
            .map_err(plot_err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        let used = points.iter().map(|&(x, _, u)| (x, to_gib(u)));
        let light = color.mix(0.45);
        chart
            .draw_series(LineSeries::new(used, light.stroke_width(2)))
            .map_err(plot_err)?
            .label(label.replace("reserved", "holding tokens"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], light.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}
// ANCHOR_END: figure

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the figure: {e}")
}
