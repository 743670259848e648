//! Parallel sampling (`n` samples per prompt) with copy-on-write, against the same samples sent as
//! independent requests: a real CPU run (chapter 4 beside them) and accounting runs of the 7B
//! shape, one where everything fits (peak blocks = the memory the samples need) and one where
//! memory is the limit (how many samples run at once).

use crate::capacity::{block_config, AccountingSpec, RealRunSpec};
use anyhow::{Context, Result};
use ch00_model::{
    kv_bytes_per_token, split_samples, DType, Engine, LlamaConfig, Model, Request, RunOptions, RunOutput, SamplingParams,
    WorkloadSpec,
};
use ch05_paged_attention::{blocks_for_budget, simulate_blocks, BlockRunInfo, MemSeries};
use std::fmt::Write;

/// One way of serving the samples.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SamplingDesign {
    pub design: String,
    /// Most blocks in use at once (`None` for contiguous slots).
    pub peak_blocks_used: Option<usize>,
    pub peak_running: usize,
    pub mean_running: f64,
    /// Mean running sequences while others waited (accounting runs in which some waited).
    pub mean_running_queued: Option<f64>,
    pub steps: usize,
    pub preemptions: usize,
    /// Blocks copied on write.
    pub cow_copies: usize,
    pub generated_tokens: usize,
    /// `None` in accounting runs.
    pub tokens_per_s: Option<f64>,
}

/// The samples of `prompts` prompts, `n` each, served several ways under one KV budget.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SamplingRun {
    pub model: String,
    pub prompts: usize,
    pub n: usize,
    pub budget_bytes: u64,
    pub num_blocks: usize,
    pub block_size: usize,
    pub designs: Vec<SamplingDesign>,
    /// Real run: every design produced exactly the tokens of the independent requests.
    pub same_tokens: Option<bool>,
}

/// The parallel-sampling section of `kvserve bench`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SamplingReport {
    pub real: Option<SamplingRun>,
    pub accounting: Vec<SamplingRun>,
}

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
            if model.config != LlamaConfig::named(&spec.config)? {
                anyhow::bail!("the parallel-sampling run names the {:?} shape but was given another model", spec.config);
            }
            Some(real_run(model, spec, SAMPLES)?)
        }
        (Some(spec), None) => Some(real_run(&Model::random(LlamaConfig::named(&spec.config)?, 0)?, spec, SAMPLES)?),
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
        model: format!("random:{}", spec.config),
        prompts: requests.len(),
        n,
        budget_bytes: budget,
        num_blocks,
        block_size: spec.block_size,
        designs,
        same_tokens: Some(same),
    })
}

fn paged_design(design: &str, out: &RunOutput, info: Option<&BlockRunInfo>) -> SamplingDesign {
    let s = &out.stats;
    SamplingDesign {
        design: design.into(),
        peak_blocks_used: info.map(|i| i.scheduler.peak_blocks_used),
        peak_running: s.peak_running,
        mean_running: s.mean_batch_size,
        mean_running_queued: None,
        steps: s.steps,
        preemptions: s.preemptions,
        cow_copies: info.map_or(0, |i| i.scheduler.cow_copies),
        generated_tokens: s.generated_tokens,
        tokens_per_s: Some(s.tokens_per_s),
    }
}

// ANCHOR: accounting_run
/// The accounting run's shape, budget and limits with its first `prompts` prompts, `n` samples
/// each: the block scheduler with copy-on-write, and with every sample an independent request.
pub fn accounting_run(spec: &AccountingSpec, prompts: usize, n: usize) -> Result<SamplingRun> {
    let config = LlamaConfig::named(&spec.config)?;
    let dtype = DType::parse(&spec.dtype).with_context(|| format!("unknown dtype {:?}", spec.dtype))?;
    let per_token = kv_bytes_per_token(&config, dtype);
    let num_blocks = blocks_for_budget(&config, spec.block_size, spec.budget_bytes(), dtype)?;
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
        model: format!("{} shape ({})", spec.config, spec.dtype),
        prompts,
        n,
        budget_bytes: spec.budget_bytes(),
        num_blocks,
        block_size: spec.block_size,
        designs: vec![design("ch05, copy-on-write", &cow), design("ch05, independent requests", &independent)],
        same_tokens: None,
    })
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        b => format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64),
    }
}

/// The report as Markdown tables.
pub fn to_markdown(r: &SamplingReport) -> String {
    let mut out = String::new();
    let opt = |x: Option<f64>, digits: usize| x.map_or("—".to_string(), |v| format!("{v:.digits$}"));
    let runs = r.real.iter().map(|run| ("Real run (CPU)", run)).chain(r.accounting.iter().map(|run| ("Accounting run", run)));
    for (kind, run) in runs {
        let _ = writeln!(
            out,
            "### {kind}: {} prompts × {} samples, {}\n\nKV budget {} = {} blocks of {} tokens.{}\n",
            run.prompts,
            run.n,
            run.model,
            human_bytes(run.budget_bytes),
            run.num_blocks,
            run.block_size,
            match run.same_tokens {
                Some(true) => " Every design produced exactly the independent requests' tokens.",
                Some(false) => " **The designs produced different tokens.**",
                None => "",
            }
        );
        let _ = writeln!(out, "| design | peak blocks used | peak running | mean running | mean running while queued | copies | preemptions | steps | tokens/s |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for d in &run.designs {
            let blocks = d.peak_blocks_used.map_or("—".to_string(), |b| b.to_string());
            let _ = writeln!(
                out,
                "| {} | {blocks} | {} | {:.1} | {} | {} | {} | {} | {} |",
                d.design,
                d.peak_running,
                d.mean_running,
                opt(d.mean_running_queued, 1),
                d.cow_copies,
                d.preemptions,
                d.steps,
                opt(d.tokens_per_s, 1)
            );
        }
        out.push('\n');
    }
    out
}
