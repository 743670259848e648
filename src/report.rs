//! The side-by-side reports: the tour's table and `kvserve bench` (table, JSON, Markdown).

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use kvserve::capacity::{capacity_report_on, to_markdown, write_capacity_figures, CapacityOptions, CapacityReport, RealRunSpec};
use kvserve::sampling::{self, SamplingReport};
use kvserve::ch00_model::workload::WorkloadSpec;
use kvserve::ch00_model::{load_model, Engine, LoadedModel, Model, Request, RunOptions, RunOutput};
use serde::Serialize;
use std::fmt::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Smaller workloads (about a minute on a 2-core machine).
    #[arg(long)]
    pub quick: bool,
    /// Also write the report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the tables as Markdown files into this directory (the book's `generated/`).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// With --markdown: also redraw the capacity figures into this directory.
    #[arg(long)]
    pub figures: Option<PathBuf>,
    /// Requests in the batching workload (default 48, quick 16).
    #[arg(long)]
    pub requests: Option<usize>,
    /// Named random model of the batching comparison; the default is large enough that a decode
    /// step is memory-bound on a CPU (weights far beyond the caches).
    #[arg(long, default_value = "bench")]
    pub config: String,
}

const TOUR_PROMPTS: [&str; 4] =
    ["ROMEO:\n", "HAMLET:\nTo be, or not to be", "KING HENRY V:\nOnce more unto the breach", "First Citizen:\n"];

/// Prompts of the tour and the single-stream bench, `max_new` greedy tokens each.
pub fn tour_requests(loaded: &LoadedModel, max_new: usize) -> Result<Vec<Request>> {
    TOUR_PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| Ok(Request::greedy(i as u64, loaded.encode(p)?, max_new)))
        .collect()
}

/// One stage's figures, as the JSON report records them.
#[derive(Debug, Serialize)]
pub struct StageRow {
    pub stage: String,
    pub tokens_per_s: f64,
    pub generated_tokens: usize,
    pub wall_s: f64,
    pub steps: usize,
    pub mean_batch_size: f64,
    pub peak_running: usize,
    pub ttft_ms_mean: f64,
    pub ttft_ms_p50: f64,
    pub ttft_ms_p99: f64,
    pub tpot_ms_mean: f64,
    pub tpot_ms_p50: f64,
    pub tpot_ms_p99: f64,
    pub slot_utilisation: f64,
    pub wasted_slot_steps: u64,
    pub preemptions: usize,
    pub kv_bytes_allocated: u64,
    pub kv_bytes_used: u64,
}

fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[((p / 100.0 * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)]
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

impl StageRow {
    pub fn new(stage: &str, run: &RunOutput) -> Self {
        let ttft: Vec<f64> = run.outputs.iter().filter(|o| !o.tokens.is_empty()).map(|o| o.ttft_s * 1e3).collect();
        // Time per output token: each request's mean gap between tokens after the first.
        let tpot: Vec<f64> =
            run.outputs.iter().filter(|o| !o.token_latencies_s.is_empty()).map(|o| mean(&o.token_latencies_s) * 1e3).collect();
        let s = &run.stats;
        StageRow {
            stage: stage.to_string(),
            tokens_per_s: s.tokens_per_s,
            generated_tokens: s.generated_tokens,
            wall_s: s.wall_s,
            steps: s.steps,
            mean_batch_size: s.mean_batch_size,
            peak_running: s.peak_running,
            ttft_ms_mean: mean(&ttft),
            ttft_ms_p50: percentile(&ttft, 50.0),
            ttft_ms_p99: percentile(&ttft, 99.0),
            tpot_ms_mean: mean(&tpot),
            tpot_ms_p50: percentile(&tpot, 50.0),
            tpot_ms_p99: percentile(&tpot, 99.0),
            slot_utilisation: s.slot_utilisation,
            wasted_slot_steps: s.wasted_slot_steps,
            preemptions: s.preemptions,
            kv_bytes_allocated: s.kv_bytes_allocated,
            kv_bytes_used: s.kv_bytes_used,
        }
    }
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64)
}

// ANCHOR: stage_table
/// The tour's table: throughput, its ratio to the previous stage, and the KV memory each held.
pub fn stage_table(rows: &[(&str, RunOutput)]) -> String {
    let mut t = String::from("| stage | tokens/s | × previous | steps | KV allocated | KV used | used % |\n|---|---:|---:|---:|---:|---:|---:|\n");
    let mut prev: Option<f64> = None;
    for (name, run) in rows {
        let s = &run.stats;
        let ratio = prev.map_or("—".to_string(), |p| format!("{:.1}×", s.tokens_per_s / p));
        let used_pct = if s.kv_bytes_allocated > 0 { format!("{:.1}", 100.0 * s.kv_bytes_used as f64 / s.kv_bytes_allocated as f64) } else { "—".into() };
        let _ = writeln!(t, "| {name} | {:.1} | {ratio} | {} | {} | {} | {used_pct} |", s.tokens_per_s, s.steps, mib(s.kv_bytes_allocated), mib(s.kv_bytes_used));
        prev = Some(s.tokens_per_s);
    }
    t
}
// ANCHOR_END: stage_table

fn batching_table(rows: &[StageRow]) -> String {
    let mut t = String::from("| stage | tokens/s | × previous | TTFT p50 / p99 (ms) | TPOT p50 / p99 (ms) | mean batch | peak running | slot / block util.¹ | wasted slot-steps | preemptions |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut prev: Option<f64> = None;
    for r in rows {
        let ratio = prev.map_or("—".to_string(), |p| format!("{:.2}×", r.tokens_per_s / p));
        let _ = writeln!(
            t,
            "| {} | {:.1} | {ratio} | {:.0} / {:.0} | {:.1} / {:.1} | {:.2} | {} | {:.2} | {} | {} |",
            r.stage, r.tokens_per_s, r.ttft_ms_p50, r.ttft_ms_p99, r.tpot_ms_p50, r.tpot_ms_p99, r.mean_batch_size, r.peak_running, r.slot_utilisation, r.wasted_slot_steps, r.preemptions
        );
        prev = Some(r.tokens_per_s);
    }
    t.push_str(UTILISATION_NOTE);
    t
}

/// What the utilisation column means for each kind of engine.
const UTILISATION_NOTE: &str = "\n¹ ch02–ch04: busy slot-steps ÷ (slots × steps). ch05: share of the pool's blocks holding tokens, mean over steps.\n";

/// A short description of this machine: CPU model and core count, and no GPU.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cpu}, {cores} cores, no GPU")
}

#[derive(Serialize)]
struct SingleStream {
    model: String,
    new_tokens_per_request: usize,
    requests: usize,
    stages: Vec<StageRow>,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    command: String,
    /// ch01 vs ch02, one request at a time, on the default model.
    single_stream: SingleStream,
    /// The batching comparison's model and workload; `stages` are all run on it.
    model: String,
    workload: WorkloadSpec,
    stages: Vec<StageRow>,
    /// ch04's throughput divided by ch03's on `workload`.
    continuous_over_static: Option<f64>,
    /// ch04 (contiguous slots) vs ch05 (blocks) under one KV budget: a real CPU run and the
    /// 7B-on-an-80-GB-GPU accounting run.
    capacity: CapacityReport,
    /// `n` samples per prompt: ch05 with copy-on-write against the same samples as independent
    /// requests (peak blocks, running sequences, copies).
    parallel_sampling: SamplingReport,
}

fn run_stages(model: &Model, requests: &[Request], engines: Vec<Box<dyn Engine>>, label: &str) -> Result<Vec<(&'static str, RunOutput)>> {
    let bar = ProgressBar::new(engines.len() as u64)
        .with_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let mut out = Vec::new();
    for mut e in engines {
        bar.set_message(format!("{label}: {}", e.name()));
        out.push((e.name(), e.run(model, requests, &RunOptions::default())?));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let machine = machine();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    println!("kvserve bench on {machine}\n");

    // 1. One request at a time: recompute (ch01) vs KV cache (ch02), on the default model.
    let loaded = load_model(None, None)?;
    let new_tokens = if args.quick { 32 } else { 128 };
    let requests = tour_requests(&loaded, new_tokens)?;
    let single = run_stages(&loaded.model, &requests, kvserve::stages().into_iter().take(2).collect(), "single stream")?;
    let single_md = stage_table(&single);
    println!("## One request at a time — model {}, {} prompts × {new_tokens} new tokens\n\n{single_md}", loaded.source, requests.len());

    // 2. Batching: every stage from ch02 on, on the exponential-output workload and the bench model.
    let bench_model = load_model(None, Some(&args.config))?;
    let n = args.requests.unwrap_or(if args.quick { 16 } else { 48 });
    let spec = WorkloadSpec::exponential_default(n, 0);
    let requests = spec.generate(bench_model.model.config.vocab_size);
    let engines: Vec<_> = kvserve::stages().into_iter().skip(1).collect();
    let batched = run_stages(&bench_model.model, &requests, engines, "batching")?;
    let rows: Vec<StageRow> = batched.iter().map(|(n, r)| StageRow::new(n, r)).collect();
    let batch_md = batching_table(&rows);
    let tps = |prefix: &str| rows.iter().find(|r| r.stage.starts_with(prefix)).map(|r| r.tokens_per_s);
    let ratio = tps("ch04").zip(tps("ch03")).map(|(c, s)| c / s);
    println!("## Batching — model {} ({} params, {} of f32 weights), {} requests\n", bench_model.source, bench_model.model.config.param_count(), mib(bench_model.model.config.param_count() * 4), n);
    println!("workload: {spec:?}\n\n{batch_md}");
    if let Some(r) = ratio {
        println!("continuous (ch04) / static (ch03) throughput: {r:.2}×\n");
    }

    // 3. Capacity: the same KV budget as contiguous slots (ch04) and as blocks (ch05).
    let mut cap_opts = if args.quick { CapacityOptions { real: None, ..CapacityOptions::full() } } else { CapacityOptions::full() };
    if let Some(real) = cap_opts.real.as_mut() {
        real.config = args.config.clone(); // it runs on `bench_model`, so it is labelled with its shape
    }
    let capacity = capacity_report_on(Some(&bench_model.model), &cap_opts)?;
    let capacity_md = to_markdown(&capacity);
    println!("{capacity_md}");

    // 4. Parallel sampling: n samples per prompt, copy-on-write against independent requests.
    let sampling_spec = RealRunSpec { config: args.config.clone(), ..sampling::real_spec() };
    let real = (!args.quick).then_some(&sampling_spec);
    let parallel_sampling = sampling::sampling_report(Some(&bench_model.model), real)?;
    let sampling_md = sampling::to_markdown(&parallel_sampling);
    println!("## Parallel sampling\n\n{sampling_md}");

    let report = Report {
        machine: machine.clone(),
        command: command.clone(),
        single_stream: SingleStream {
            model: loaded.source_name(),
            new_tokens_per_request: new_tokens,
            requests: TOUR_PROMPTS.len(),
            stages: single.iter().map(|(n, r)| StageRow::new(n, r)).collect(),
        },
        model: bench_model.source_name(),
        workload: spec.clone(),
        stages: rows,
        continuous_over_static: ratio,
        capacity,
        parallel_sampling,
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = &args.markdown {
        std::fs::create_dir_all(dir)?;
        let footer = format!("\n*Measured on {machine} with `{command}`.*\n");
        let what = format!("One request at a time, model `{}`, {} prompts × {new_tokens} new tokens, greedy:\n\n", loaded.source_name(), TOUR_PROMPTS.len());
        std::fs::write(dir.join("stages-ch01-ch02.md"), format!("{what}{single_md}{footer}"))?;
        let ratio_line = ratio.map_or(String::new(), |r| format!("\nContinuous (ch04) over static (ch03) throughput: **{r:.2}×**.\n"));
        std::fs::write(dir.join("batching.md"), format!("Workload: `{spec:?}` on `{}`.\n\n{batch_md}{ratio_line}{footer}", bench_model.source))?;
        std::fs::write(dir.join("capacity-ch05.md"), format!("{capacity_md}{footer}"))?;
        std::fs::write(dir.join("parallel-sampling.md"), format!("{sampling_md}{footer}"))?;
        if let Some(figures) = &args.figures {
            write_capacity_figures(&report.capacity, figures)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvserve::ch00_model::{FinishReason, RequestOutput, RunStats};

    fn output(ttft_s: f64, gaps: &[f64]) -> RequestOutput {
        RequestOutput {
            id: 0,
            sample: 0,
            tokens: vec![5; gaps.len() + 1],
            finish: FinishReason::Length,
            ttft_s,
            token_latencies_s: gaps.to_vec(),
            logits: Vec::new(),
        }
    }

    #[test]
    fn percentiles_come_from_the_requests() {
        // TTFTs 1..=100 ms; TPOT of each request is the mean of its gaps.
        let outputs: Vec<_> = (1..=100).map(|i| output(i as f64 / 1e3, &[0.010, 0.030])).collect();
        let run = RunOutput { outputs, stats: RunStats::default(), trace: Vec::new() };
        let row = StageRow::new("x", &run);
        assert!((row.ttft_ms_p50 - 51.0).abs() < 1e-9, "{}", row.ttft_ms_p50);
        assert!((row.ttft_ms_p99 - 99.0).abs() < 1e-9, "{}", row.ttft_ms_p99);
        assert!((row.tpot_ms_p50 - 20.0).abs() < 1e-9 && (row.tpot_ms_mean - 20.0).abs() < 1e-9);
    }
}
