//! `kvserve trace`: run static (ch03) and continuous (ch04) batching on the same small workload
//! with tracing on, and draw each run's slots over time as a Gantt chart (SVG).

use anyhow::{bail, Context};
use bookgen::figures::{gantt_svg, GanttOptions};
use ch00_model::{kv_bytes_per_token, DType, LlamaConfig};
use ch00_serving::{resolve_max_len, Engine, RunOptions, RunOutput, WorkloadSpec};
use ch03_static_batching::StaticBatchEngine;
use ch04_continuous_batching::{slots_for_budget, ContinuousBatchEngine, SlotBudget};
use std::path::PathBuf;

/// Arguments of `kvserve trace`.
#[derive(clap::Args, Debug, Clone)]
pub struct TraceArgs {
    /// Checkpoint directory to load (default: a random model of `--config`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Named random model shape (tiny, bench) when no `--model` is given.
    #[arg(long, default_value = "bench")]
    pub config: String,
    /// Requests in the workload (exponential output lengths, all arriving at once).
    #[arg(long, default_value_t = 12)]
    pub requests: usize,
    /// Cache slots for both engines (the static batch size).
    #[arg(long, default_value_t = 4)]
    pub slots: usize,
    /// KV-cache budget in bytes: both engines get as many max-length slots as fit (overrides
    /// `--slots`; an error if not even one fits).
    #[arg(long, value_name = "BYTES")]
    pub kv_budget: Option<u64>,
    /// Workload seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Directory the SVGs are written to (default: the book's figures folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Most requests a traced run draws (one Gantt bar each; more is unreadable).
const MAX_REQUESTS: usize = 1000;

/// The slot count and budget both engines get, checked before anything is allocated: a slot
/// beyond the number of requests could never hold one, so asking for it is an error.
fn slot_budget(args: &TraceArgs, config: &LlamaConfig) -> anyhow::Result<(usize, SlotBudget)> {
    if args.requests == 0 || args.requests > MAX_REQUESTS {
        bail!("--requests {} is out of range: a trace draws 1 to {MAX_REQUESTS} requests", args.requests);
    }
    let n = args.requests;
    match args.kv_budget {
        Some(bytes) => {
            let max_len = resolve_max_len(config, None)?; // the engines' default slot length
            let slots = slots_for_budget(config, max_len, bytes)?;
            if slots > n {
                let slot_bytes = max_len as u64 * kv_bytes_per_token(config, DType::F32);
                bail!(
                    "--kv-budget {bytes} B holds {slots} slots of {max_len} tokens, more than the {n} requests can use: \
                     give at most {} B ({n} slots × {slot_bytes} B)",
                    n as u64 * slot_bytes
                );
            }
            Ok((slots, SlotBudget::KvBytes(bytes)))
        }
        None if args.slots == 0 || args.slots > n => {
            bail!("--slots {} is out of range: give 1 to {n} (the number of requests; more slots are never used)", args.slots)
        }
        None => Ok((args.slots, SlotBudget::Slots(args.slots))),
    }
}

// ANCHOR: run
/// Runs both engines on `WorkloadSpec::exponential_default(requests, seed)` and writes
/// `gantt-static.svg` and `gantt-continuous.svg`, on one time scale so they compare at a glance.
pub fn run(args: &TraceArgs) -> anyhow::Result<()> {
    // Sizes are checked on the config, before weights or caches are allocated.
    let (slots, budget) = match &args.model {
        Some(dir) => slot_budget(args, &LlamaConfig::from_file(&dir.join("config.json"))?)?,
        None => slot_budget(args, &LlamaConfig::named(&args.config)?)?,
    };
    let loaded = match &args.model {
        Some(dir) => kvserve::load_model(Some(dir), None)?,
        None => kvserve::load_model(None, Some(&args.config))?,
    };
    let model = &loaded.model;
    let spec = WorkloadSpec::exponential_default(args.requests, args.seed);
    spec.validate(model.config.vocab_size)?;
    let requests = spec.generate(model.config.vocab_size);
    let opts = RunOptions { trace: true, ..Default::default() };
    let mut static_engine = StaticBatchEngine { batch_size: slots, max_len: None };
    let mut continuous = ContinuousBatchEngine { slots: budget, ..Default::default() };
    let runs: [(&str, &str, RunOutput); 2] = [
        ("gantt-static.svg", "static batching (ch03)", static_engine.run(model, &requests, &opts)?),
        ("gantt-continuous.svg", "continuous batching (ch04)", continuous.run(model, &requests, &opts)?),
    ];
    let x_max_s = runs.iter().map(|r| r.2.stats.wall_s).fold(0.0, f64::max);
    let out_dir =
        args.out.clone().unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("book/src/figures"));
    std::fs::create_dir_all(&out_dir)?;
    for (file, what, out) in &runs {
        let s = &out.stats;
        // Every row of a step is computed; padding rows are computed for nothing.
        let rows: usize = out.trace.iter().map(|t| t.entries.len()).sum();
        let padding = 100.0 * s.wasted_slot_steps as f64 / rows.max(1) as f64;
        let title = format!(
            "{what}: {} requests, {} slots, {:.1} tok/s, slot utilisation {:.0}%, padding {padding:.0}% of computed rows ({})",
            requests.len(),
            slots,
            s.tokens_per_s,
            100.0 * s.slot_utilisation,
            loaded.source_name()
        );
        let height = u32::try_from(slots).ok().and_then(|s| s.checked_mul(44)?.checked_add(90)).context("too many slots to draw")?;
        let opts = GanttOptions { title, num_slots: slots, x_max_s, width: 960, height };
        let path = out_dir.join(file);
        std::fs::write(&path, gantt_svg(&out.trace, &opts)?)?;
        println!(
            "{what:<28} {:>7.1} tok/s  {:>5} steps  utilisation {:.2}  wasted slot-steps {:>5}  -> {}",
            s.tokens_per_s,
            s.steps,
            s.slot_utilisation,
            s.wasted_slot_steps,
            path.display()
        );
    }
    println!("continuous / static throughput: {:.2}x", runs[1].2.stats.tokens_per_s / runs[0].2.stats.tokens_per_s);
    Ok(())
}
// ANCHOR_END: run
