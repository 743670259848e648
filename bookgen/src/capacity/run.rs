//! The capacity experiment's runs: the real CPU run (chapter 4's and chapter 5's engines on a
//! model), the accounting run (their schedulers with no model), the block-size rows and the
//! prefix-sharing row, and the report that gathers them.

use crate::capacity::result::{BlockSizeRow, CapacityReport, CapacityRun, DesignResult, PrefixRow, RunHead};
use crate::capacity::spec::{block_config, slot_config, AccountingSpec, CapacityOptions, RealRunSpec};
use crate::shape::dtype_name;
use anyhow::{Context, Result};
use ch00_model::{kv_bytes_per_token, DType, Model};
use ch00_serving::{Engine, RunOptions};
use ch05_paged_attention::{blocks_for_budget, simulate_blocks, simulate_slots, MemSeries, SchedulerConfig};

// ANCHOR: capacity_report
/// Runs the experiment: the real CPU run (if asked), the accounting run, the block-size table and
/// the prefix-sharing row. Builds the real run's model from `opts.real.shape`.
pub fn capacity_report(opts: &CapacityOptions) -> Result<CapacityReport> {
    capacity_report_on(None, opts)
}

/// [`capacity_report`] with an already loaded model for the real run (it must have the shape
/// `opts.real.shape` names, e.g. the `bench` model the rest of `kvserve bench` uses).
pub fn capacity_report_on(model: Option<&Model>, opts: &CapacityOptions) -> Result<CapacityReport> {
    let real = match (&opts.real, model) {
        (Some(spec), Some(model)) => {
            if model.config != spec.shape.config {
                anyhow::bail!("the real capacity run names the {:?} shape but was given another model", spec.shape.name);
            }
            Some(real_run(model, spec)?)
        }
        (Some(spec), None) => Some(real_run(&Model::random(spec.shape.config.clone(), 0)?, spec)?),
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
        MemSeries::from_trace(&out.trace, Some(spec.max_len as u64 * per_token), out.stats.generated_tokens);
    let times = out.trace.iter().map(|t| t.t_s).collect();
    let contiguous = DesignResult::new(&series, Some(out.stats.tokens_per_s), Some(times));

    let mut ch05 = spec.paged_engine(&model.config);
    let (block_cfg, _) = ch05.scheduler_config(model)?;
    let out = ch05.run(model, &requests, &opts).context("chapter 5 engine")?;
    let series = MemSeries::from_trace(&out.trace, None, out.stats.generated_tokens);
    let times = out.trace.iter().map(|t| t.t_s).collect();
    let paged = DesignResult::new(&series, Some(out.stats.tokens_per_s), Some(times));

    let head = RunHead {
        model: format!("random:{}", spec.shape.name),
        dtype: dtype_name(DType::F32).into(),
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

// ANCHOR: accounting_run
/// Drives chapter 4's slot scheduler and chapter 5's block scheduler with simulated token counts
/// for a model shape on a GPU: no weights, no compute, the same schedulers as the engines.
pub fn accounting_run(spec: &AccountingSpec) -> Result<CapacityRun> {
    let (config, dtype) = (&spec.shape.config, spec.dtype);
    let per_token = kv_bytes_per_token(config, dtype);
    let budget = spec.budget_bytes();
    let slot_bytes = spec.max_len as u64 * per_token;
    anyhow::ensure!(budget >= slot_bytes, "KV budget of {budget} bytes holds no slot of {slot_bytes} bytes");
    let num_slots = (budget / slot_bytes) as usize;
    let num_blocks = blocks_for_budget(config, spec.block_size, budget, dtype)?;
    let requests = spec.workload.generate(config.vocab_size);

    let slots = simulate_slots(&requests, slot_config(num_slots), spec.max_len, per_token)?;
    let blocks =
        simulate_blocks(&requests, block_config(num_blocks, spec.block_size), spec.max_len, per_token)?;
    // ANCHOR_END: accounting_run
    let head = RunHead {
        model: format!("{} shape", spec.shape.name),
        dtype: dtype_name(dtype).into(),
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
    let (config, dtype) = (&spec.shape.config, spec.dtype);
    let per_token = kv_bytes_per_token(config, dtype);
    let num_blocks = blocks_for_budget(config, block_size, spec.budget_bytes(), dtype)?;
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
    let (config, dtype) = (&spec.shape.config, spec.dtype);
    let per_token = kv_bytes_per_token(config, dtype);
    let system: Vec<u32> =
        (0..system_tokens as u32)
            .map(|t| 3 + t % (config.vocab_size as u32).saturating_sub(3).max(1))
            .collect();
    let mut requests = spec.workload.generate(config.vocab_size);
    for r in &mut requests {
        r.prompt = [&system[..], &r.prompt[..]].concat();
        r.prompt.truncate(spec.max_len);
    }
    let num_blocks = blocks_for_budget(config, spec.block_size, spec.budget_bytes(), dtype)?;
    let num_slots = (spec.budget_bytes() / (spec.max_len as u64 * per_token)) as usize;
    let cfg = block_config(num_blocks, spec.block_size);
    let slots = simulate_slots(&requests, slot_config(num_slots), spec.max_len, per_token)?;
    let paged = simulate_blocks(&requests, cfg, spec.max_len, per_token)?;
    let sharing = SchedulerConfig { prefix_sharing: true, ..cfg };
    let shared = simulate_blocks(&requests, sharing, spec.max_len, per_token)?;
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
