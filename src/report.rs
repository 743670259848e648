//! `kvserve bench`: every measurement the book shows, as tables on the terminal, JSON, and the
//! Markdown files of the book's `generated/` folder, each naming the machine and the command.

use crate::machine::machine;
use bookgen::bench::{
    batching_table, equal_limits_table, mib, ratio_table, rows_vs_time, sizes_table, stage_table, step_cost_table,
    SizeRow, StageRow, LATENCY_NOTE,
};
use bookgen::capacity::{
    capacity_report_on, claims_markdown, to_markdown, write_capacity_figures, CapacityOptions, CapacityReport,
    RealRunSpec,
};
use bookgen::sampling::{self, SamplingReport};
use bookgen::shape::Shape;
use anyhow::{Context, Result};
use ch03_static_batching::{decode_step_ms, StaticBatchEngine};
use ch04_continuous_batching::{ContinuousBatchEngine, SlotBudget};
use ch05_paged_attention::PagedEngine;
use indicatif::{ProgressBar, ProgressStyle};
use kvserve::ch00_model::{roofline::{read_bandwidth, weight_bytes_per_step}};
use kvserve::ch00_serving::WorkloadSpec;
use kvserve::ch00_model::{load_model, LoadedModel, Model};
use kvserve::ch00_serving::{Engine, Request, RunOptions, RunOutput};
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Smaller workloads and fewer sections (about a minute on a 2-core machine).
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
    #[command(flatten)]
    pub prefill: crate::prefill_flags::PrefillFlags,
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

#[derive(Serialize)]
struct SingleStream {
    model: String,
    new_tokens_per_request: usize,
    requests: usize,
    stages: Vec<StageRow>,
}

/// Chapter 4's and chapter 5's default engines: their per-step limits and their rows.
#[derive(Serialize)]
struct EqualLimits {
    max_running: [usize; 2],
    max_tokens_per_step: [usize; 2],
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
    /// ch02's decode step (batch 1) on `model` beside the least it could take.
    step_floor: Option<StepFloor>,
    /// The limits ch04 and ch05 ran `workload` with (equal: the same defaults for the same memory).
    equal_limits: EqualLimits,
    /// ch03 vs ch04 on workloads of several sizes (not in --quick).
    sizes: Vec<SizeRow>,
    /// Median decode step time (ms) by batch size: (B, ms).
    step_cost_ms: Vec<(usize, f64)>,
    /// ch04 (contiguous slots) vs ch05 (blocks) under one KV budget: a real CPU run and the
    /// 7B-on-an-80-GB-GPU accounting run.
    capacity: CapacityReport,
    /// `n` samples per prompt: ch05 with copy-on-write against the same samples as independent
    /// requests (peak blocks, running sequences, copies).
    parallel_sampling: SamplingReport,
    /// Wall-clock seconds of the whole `kvserve bench` run, writing its files included.
    wall_s: f64,
}

// ANCHOR: step_floor
/// One decode step at batch 1 (ch02's median time per output token) beside its floor: every
/// weight read once, at the read bandwidth of this machine's cores measured in the same run.
#[derive(Debug, Serialize)]
pub struct StepFloor {
    pub step_ms: f64,
    pub weight_bytes: u64,
    pub read_gb_s: f64,
    pub floor_ms: f64,
    /// floor_ms / step_ms: 1.0 would be a step that only streams the weights.
    pub fraction_of_floor: f64,
}

impl StepFloor {
    pub fn measure(model: &Model, ch02: &StageRow) -> Self {
        let weight_bytes = weight_bytes_per_step(&model.config, model.weight_dtype());
        let read = read_bandwidth(1 << 30, 10); // bytes/s, a buffer far beyond the caches
        let floor_ms = weight_bytes as f64 / read * 1e3;
        let step_ms = ch02.tpot_ms_p50;
        StepFloor { step_ms, weight_bytes, read_gb_s: read / 1e9, floor_ms, fraction_of_floor: floor_ms / step_ms }
    }

    pub fn line(&self) -> String {
        format!(
            "Batch-1 decode step (ch02, median): {:.2} ms; weight-read floor: {:.0} MB ÷ {:.1} GB/s = {:.2} ms ({:.0}% of the floor's speed).",
            self.step_ms,
            self.weight_bytes as f64 / 1e6,
            self.read_gb_s,
            self.floor_ms,
            100.0 * self.fraction_of_floor
        )
    }
}
// ANCHOR_END: step_floor

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

/// `5:02 (302 s)`.
fn minutes(seconds: f64) -> String {
    let s = seconds.round() as u64;
    format!("{}:{:02} ({s} s)", s / 60, s % 60)
}

/// ch03 (batch `slots`) and ch04 (`slots` slots) on `exponential_default(requests, 0)`.
fn size_row(model: &Model, requests: usize, slots: usize) -> Result<SizeRow> {
    let reqs = WorkloadSpec::exponential_default(requests, 0).generate(model.config.vocab_size);
    let engines: Vec<Box<dyn Engine>> = vec![
        Box::new(StaticBatchEngine { batch_size: slots, max_len: None }),
        Box::new(ContinuousBatchEngine { slots: SlotBudget::Slots(slots), ..Default::default() }),
    ];
    let runs = run_stages(model, &reqs, engines, &format!("{requests} requests"))?;
    Ok(size_row_of(requests, slots, &runs[0].1, &runs[1].1))
}

fn size_row_of(requests: usize, slots: usize, ch03: &RunOutput, ch04: &RunOutput) -> SizeRow {
    SizeRow {
        requests,
        slots,
        ch03_tokens_per_s: ch03.stats.tokens_per_s,
        ch04_tokens_per_s: ch04.stats.tokens_per_s,
        ch03_steps: ch03.stats.steps,
        ch04_steps: ch04.stats.steps,
        ch04_utilisation: ch04.stats.slot_utilisation,
        generated_tokens: ch04.stats.generated_tokens,
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let machine = machine();
    // The command as a reader would type it, wherever the binary happened to be.
    let command = crate::machine::command_line();
    let prefill = args.prefill.policy();
    println!("kvserve bench on {machine}\n");

    // 1. One request at a time: recompute (ch01) vs KV cache (ch02), on the default model.
    let loaded = load_model(None, None)?;
    let new_tokens = if args.quick { 32 } else { 128 };
    let requests = tour_requests(&loaded, new_tokens)?;
    let single = run_stages(&loaded.model, &requests, kvserve::stages_with(&prefill).into_iter().take(2).collect(), "single stream")?;
    let one_round: Vec<(&str, Vec<RunOutput>)> = single.iter().map(|(n, r)| (*n, vec![r.clone()])).collect();
    let single_md = format!("{}{}", stage_table(&one_round), rows_vs_time(&single[0].1, &single[1].1));
    println!("## One request at a time — model {}, {} prompts × {new_tokens} new tokens\n\n{single_md}", loaded.source, requests.len());

    // 2. Batching: every stage from ch02 on, on the exponential-output workload and the bench model.
    let bench_model = load_model(None, Some(&args.config))?;
    let model = &bench_model.model;
    let n = args.requests.unwrap_or(if args.quick { 16 } else { 48 });
    let spec = WorkloadSpec::exponential_default(n, 0);
    let requests = spec.generate(model.config.vocab_size);
    let engines: Vec<_> = kvserve::stages_with(&prefill).into_iter().skip(1).collect();
    let batched = run_stages(model, &requests, engines, "batching")?;
    let rows: Vec<StageRow> = batched.iter().map(|(n, r)| StageRow::new(n, r)).collect();
    let batch_md = batching_table(&rows);
    let find = |prefix: &str| rows.iter().find(|r| r.stage.starts_with(prefix));
    let ratio = find("ch04").zip(find("ch03")).map(|(c, s)| c.tokens_per_s / s.tokens_per_s);
    let ratio_md = find("ch03").zip(find("ch04")).map(|(s, c)| ratio_table(s, c)).unwrap_or_default();
    let params = model.config.param_count();
    println!("## Batching — model {} ({params} params, {} of f32 weights), {n} requests\n", bench_model.source, mib(params * 4));
    println!("workload: {spec:?}\n\n{batch_md}\n{ratio_md}");
    if let Some(r) = ratio {
        println!("continuous (ch04) / static (ch03) throughput: {r:.2}×\n");
    }
    let step_floor = find("ch02").map(|ch02| StepFloor::measure(model, ch02));
    if let Some(f) = &step_floor {
        println!("{}\n", f.line());
    }

    // 2b. ch05 vs ch04 as run above: the same limits (ch04's defaults) and the same memory.
    let (slot_cfg, _) = ContinuousBatchEngine::default().scheduler_config(model)?;
    let (block_cfg, _) = prefill.apply(PagedEngine::default()).scheduler_config(model)?;
    let equal_limits = EqualLimits {
        max_running: [slot_cfg.max_running, block_cfg.max_running],
        max_tokens_per_step: [slot_cfg.max_tokens_per_step, block_cfg.max_tokens_per_step],
    };
    let limits_md = match (find("ch04"), find("ch05")) {
        (Some(c), Some(p)) => equal_limits_table(&[
            (c, slot_cfg.max_running, slot_cfg.max_tokens_per_step),
            (p, block_cfg.max_running, block_cfg.max_tokens_per_step),
        ]),
        _ => String::new(),
    };
    println!("## ch05 against ch04, equal limits\n\n{limits_md}");

    // 2c. The ch04/ch03 ratio on workloads of several sizes (the last one is the run above).
    let mut sizes = Vec::new();
    if !args.quick {
        for (requests, slots) in [(12, 4), (32, 8)] {
            sizes.push(size_row(model, requests, slots)?);
        }
        if let (Some((_, s)), Some((_, c))) = (batched.get(1), batched.get(2)) {
            sizes.push(size_row_of(n, StaticBatchEngine::default().batch_size, s, c));
        }
    }
    let sizes_md = sizes_table(&sizes);
    if !sizes.is_empty() {
        println!("## ch04 / ch03 by workload size\n\n{sizes_md}");
    }

    // 2d. What a decode step costs as the batch grows.
    let max_b = if args.quick { 8 } else { 32 };
    let step_cost_ms: Vec<(usize, f64)> =
        std::iter::successors(Some(1), |b| Some(b * 2)).take_while(|&b| b <= max_b).map(|b| Ok((b, decode_step_ms(model, b)?))).collect::<Result<_>>()?;
    let step_md = step_cost_table(&step_cost_ms);
    println!("## Decode step cost by batch size\n\n{step_md}");

    // 3. Capacity: the same KV budget as contiguous slots (ch04) and as blocks (ch05).
    let mut cap_opts = if args.quick { CapacityOptions { real: None, ..CapacityOptions::full() } } else { CapacityOptions::full() };
    if let Some(real) = cap_opts.real.as_mut() {
        real.shape = Shape::named(&args.config)?; // it runs on `bench_model`, so it is labelled with its shape
    }
    let capacity = capacity_report_on(Some(model), &cap_opts)?;
    let capacity_md = to_markdown(&capacity);
    println!("{capacity_md}");

    // 4. Parallel sampling: n samples per prompt, copy-on-write against independent requests.
    let sampling_spec = RealRunSpec { shape: Shape::named(&args.config)?, ..sampling::real_spec() };
    let real = (!args.quick).then_some(&sampling_spec);
    let parallel_sampling = sampling::sampling_report(Some(model), real)?;
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
        step_floor,
        equal_limits,
        sizes,
        step_cost_ms,
        capacity,
        parallel_sampling,
        wall_s: started.elapsed().as_secs_f64(), // the measurements; writing files is negligible
    };
    println!("kvserve bench took {}.\n", minutes(report.wall_s));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = &args.markdown {
        std::fs::create_dir_all(dir)?;
        let footer = format!("\n*Measured on {machine} with `{command}`.*\n");
        let write = |name: &str, body: String| {
            std::fs::write(dir.join(name), format!("{body}{footer}")).with_context(|| format!("writing {name}"))
        };
        let source = bench_model.source_name();
        let what = format!("One request at a time, model `{}`, {} prompts × {new_tokens} new tokens, greedy:\n\n", loaded.source_name(), TOUR_PROMPTS.len());
        write("stages-ch01-ch02.md", format!("{what}{single_md}"))?;
        let mut ratio_line = ratio.map_or(String::new(), |r| format!("\nContinuous (ch04) over static (ch03) throughput: **{r:.2}×**.\n"));
        if let Some(f) = &report.step_floor {
            ratio_line.push_str(&format!("\n{}\n", f.line()));
        }
        write("batching.md", format!("Workload: `{spec:?}` on `{source}`.\n\n{batch_md}{ratio_line}"))?;
        write("batching-ratio.md", format!("The batching run above (`{source}`, {n} requests), ch04 against ch03:\n\n{ratio_md}"))?;
        if !report.sizes.is_empty() {
            write("batching-sizes.md", format!("`WorkloadSpec::exponential_default(requests, 0)` on `{source}`; static batch size = slots:\n\n{sizes_md}"))?;
        }
        let limits_what = format!("The batching run above (`{source}`, {n} requests): both engines with their defaults, the memory of {} slots of the model's context, and the same per-step limits:\n\n", slot_cfg.num_slots);
        write("paged-vs-continuous.md", format!("{limits_what}{limits_md}{LATENCY_NOTE}"))?;
        write("step-cost.md", format!("`{source}`: B equal requests (16-token prompts, 17 new tokens) in one static batch; median decode step:\n\n{step_md}"))?;
        write("capacity-ch05.md", capacity_md)?;
        write("capacity-claims.md", claims_markdown(&report.capacity))?;
        write("parallel-sampling.md", sampling_md)?;
        write("bench-wall.md", format!("The whole `{command}` run took **{}** of wall-clock time.\n", minutes(report.wall_s)))?;
        if let Some(figures) = &args.figures {
            write_capacity_figures(&report.capacity, figures)?;
        }
    }
    Ok(())
}
