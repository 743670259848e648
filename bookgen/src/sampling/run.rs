//! The parallel-sampling runs: `n` samples per prompt with copy-on-write against the same samples
//! sent as independent requests, on the CPU (chapter 4 beside them) and as accounting runs of the
//! capacity experiment's 7B shape.

use crate::capacity::spec::{block_config, AccountingSpec, RealRunSpec};
use crate::sampling::result::{SamplingDesign, SamplingReport, SamplingRun};
use crate::shape::dtype_name;
use anyhow::{Context, Result};
use ch00_model::{kv_bytes_per_token, Model, SamplingParams};
use ch00_serving::{split_samples, Engine, Request, RunOptions, RunOutput, WorkloadSpec};
use ch05_paged_attention::{blocks_for_budget, simulate_blocks, MemSeries, SchedulerStats};

/// Samples per prompt in every run of the report.
pub const SAMPLES: usize = 4;

/// The real run of the report: the capacity experiment's CPU run (model, 16 MiB budget, limits)
/// with its first 12 prompts, 48 samples in all.
pub fn real_spec() -> RealRunSpec {
    let spec = RealRunSpec::default();
    RealRunSpec { workload: WorkloadSpec { n_requests: 12, ..spec.workload.clone() }, ..spec }
}

/// The report: the real run when `real` is given (a model of its config, or built here), and the
/// accounting runs with 32 prompts (everything fits) and 500 (memory is the limit).
pub fn sampling_report(model: Option<&Model>, real: Option<&RealRunSpec>) -> Result<SamplingReport> {
    let real = match (real, model) {
        (Some(spec), Some(model)) => {
            if model.config != spec.shape.config {
                anyhow::bail!("the parallel-sampling run names the {:?} shape but was given another model", spec.shape.name);
            }
            Some(real_run(model, spec, SAMPLES)?)
        }
        (Some(spec), None) => Some(real_run(&Model::random(spec.shape.config.clone(), 0)?, spec, SAMPLES)?),
        (None, _) => None,
    };
    let spec = AccountingSpec::default();
    let accounting = vec![accounting_run(&spec, 32, SAMPLES)?, accounting_run(&spec, 500, SAMPLES)?];
    Ok(SamplingReport { real, accounting })
}

/// `spec`'s requests, sampled at temperature 0.8 (top-p 0.95, a seed per request), `n` samples each.
pub fn sampled(requests: Vec<Request>, n: usize) -> Vec<Request> {
    let sampling = |id: u64| SamplingParams { temperature: 0.8, top_k: 0, top_p: 0.95, seed: 1000 + 100 * id };
    requests.into_iter().map(|r| Request { n, sampling: sampling(r.id), ..r }).collect()
}

// ANCHOR: real_run
/// The real run's model, budget and prompts (`spec.workload.n_requests` of them), `n` samples
/// each: chapter 5 with copy-on-write, chapter 5 with every sample an independent request, and
/// chapter 4 (whose samples are always independent), all with the capacity run's equal limits.
pub fn real_run(model: &Model, spec: &RealRunSpec, n: usize) -> Result<SamplingRun> {
    let requests = sampled(spec.workload.generate(model.config.vocab_size), n);
    let alone = split_samples(&requests);
    let budget = spec.kv_budget(&model.config);
    let opts = RunOptions::default();
    // Memory is the only limit, as in the capacity run.
    let mut cow = spec.paged_engine(&model.config);
    let cow_out = cow.run(model, &requests, &opts).context("chapter 5, copy-on-write")?;
    let mut independent = spec.paged_engine(&model.config);
    let ind_out = independent.run(model, &alone, &opts).context("chapter 5, independent samples")?;
    let mut ch04 = spec.contiguous_engine(&model.config);
    let ch04_out = ch04.run(model, &requests, &opts).context("chapter 4")?;
    // ANCHOR_END: real_run
    let tokens = |o: &RunOutput| o.outputs.iter().map(|r| r.tokens.clone()).collect::<Vec<_>>();
    let same = tokens(&cow_out) == tokens(&ind_out) && tokens(&ch04_out) == tokens(&ind_out);
    let num_blocks = cow.scheduler_config(model)?.0.num_blocks;
    let designs = vec![
        paged_design("ch05, copy-on-write", &cow_out, cow.last_run.as_ref()),
        paged_design("ch05, independent requests", &ind_out, independent.last_run.as_ref()),
        paged_design("ch04, independent requests", &ch04_out, None),
    ];
    Ok(SamplingRun {
        model: format!("random:{}", spec.shape.name),
        prompts: requests.len(),
        n,
        budget_bytes: budget,
        num_blocks,
        block_size: spec.block_size,
        designs,
        same_tokens: Some(same),
    })
}

fn paged_design(design: &str, out: &RunOutput, info: Option<&SchedulerStats>) -> SamplingDesign {
    let s = &out.stats;
    SamplingDesign {
        design: design.into(),
        peak_blocks_used: info.map(|i| i.peak_blocks_used),
        peak_running: s.peak_running,
        mean_running: s.mean_batch_size,
        mean_running_queued: None,
        steps: s.steps,
        preemptions: s.preemptions,
        cow_copies: info.map_or(0, |i| i.cow_copies),
        generated_tokens: s.generated_tokens,
        tokens_per_s: Some(s.tokens_per_s),
    }
}

// ANCHOR: accounting_run
/// The accounting run's shape, budget and limits with its first `prompts` prompts, `n` samples
/// each: the block scheduler with copy-on-write, and with every sample an independent request.
pub fn accounting_run(spec: &AccountingSpec, prompts: usize, n: usize) -> Result<SamplingRun> {
    let (config, dtype) = (&spec.shape.config, spec.dtype);
    let per_token = kv_bytes_per_token(config, dtype);
    let num_blocks = blocks_for_budget(config, spec.block_size, spec.budget_bytes(), dtype)?;
    let mut workload = spec.workload.clone();
    workload.n_requests = prompts;
    let requests = sampled(workload.generate(config.vocab_size), n);
    let cfg = block_config(num_blocks, spec.block_size);
    let cow = simulate_blocks(&requests, cfg, spec.max_len, per_token)?;
    let independent = simulate_blocks(&split_samples(&requests), cfg, spec.max_len, per_token)?;
    // ANCHOR_END: accounting_run
    let block_bytes = spec.block_size as u64 * per_token;
    let design = |name: &str, s: &MemSeries| SamplingDesign {
        design: name.into(),
        peak_blocks_used: Some((s.peak_reserved_bytes() / block_bytes) as usize),
        peak_running: s.peak_running(),
        mean_running: s.mean_running(),
        mean_running_queued: s.steps.iter().any(|x| x.queued).then(|| s.mean_running_queued()),
        steps: s.steps.len(),
        preemptions: s.preemptions,
        cow_copies: s.cow_copies,
        generated_tokens: s.generated_tokens,
        tokens_per_s: None,
    };
    Ok(SamplingRun {
        model: format!("{} shape ({})", spec.shape.name, dtype_name(spec.dtype)),
        prompts,
        n,
        budget_bytes: spec.budget_bytes(),
        num_blocks,
        block_size: spec.block_size,
        designs: vec![design("ch05, copy-on-write", &cow), design("ch05, independent requests", &independent)],
        same_tokens: None,
    })
}
