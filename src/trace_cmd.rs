//! `kvserve trace`: run static (ch03) and continuous (ch04) batching on the same small workload
//! with tracing on, and draw each run's slots over time as a Gantt chart (SVG).

use kvserve::figures::{gantt_svg, GanttOptions};
use ch00_model::{resolve_max_len, Engine, RunOptions, RunOutput, WorkloadSpec};
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

// ANCHOR: run
/// Runs both engines on `WorkloadSpec::exponential_default(requests, seed)` and writes
/// `gantt-static.svg` and `gantt-continuous.svg`, on one time scale so they compare at a glance.
pub fn run(args: &TraceArgs) -> anyhow::Result<()> {
    let loaded = match &args.model {
        Some(dir) => kvserve::load_model(Some(dir), None)?,
        None => kvserve::load_model(None, Some(&args.config))?,
    };
    let model = &loaded.model;
    let spec = WorkloadSpec::exponential_default(args.requests, args.seed);
    spec.validate(model.config.vocab_size)?;
    let requests = spec.generate(model.config.vocab_size);
    let opts = RunOptions { trace: true, ..Default::default() };
    let (slots, budget) = match args.kv_budget {
        Some(bytes) => {
            let max_len = resolve_max_len(&model.config, None)?; // the engines' default slot length
            (slots_for_budget(&model.config, max_len, bytes)?, SlotBudget::KvBytes(bytes))
        }
        None => (args.slots, SlotBudget::Slots(args.slots)),
    };
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
        let title = format!(
            "{what}: {} requests, {} slots, {:.1} tok/s, slot utilisation {:.0}% ({})",
            requests.len(),
            slots,
            s.tokens_per_s,
            100.0 * s.slot_utilisation,
            loaded.source
        );
        let opts = GanttOptions { title, num_slots: slots, x_max_s, width: 960, height: 90 + 44 * slots as u32 };
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
