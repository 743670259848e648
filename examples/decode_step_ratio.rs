//! One decode step of `peer-76m` (64 cached tokens per sequence) at batch 1 and 8, with the
//! weights kept in f32 and in f16 (the same weights: the f32 model rounded), timed in alternating
//! rounds in one process so that a busy machine slows every case alike. Prints each round's step
//! times and the ratios that matter: batch 8 ÷ batch 1 (each weight type) and f32 ÷ f16 at batch 1.
//!
//! cargo run --release --example decode_step_ratio -- [rounds, default 7] [steps per case, default 20]

use ch02_kv_cache::{ContiguousBackend, KvCache};
use kvserve::ch00_model::{DType, LlamaConfig, Model, StepMeta};
use std::time::Instant;

const CONTEXT: usize = 64;

/// A model and `batch` sequences of CONTEXT tokens prefilled into ch02's cache.
struct Case {
    name: String,
    model: Model,
    backend: ContiguousBackend,
    batch: usize,
}

impl Case {
    fn new(model: &Model, batch: usize) -> Result<Self, Box<dyn std::error::Error>> {
        let mut backend = ContiguousBackend { slots: (0..batch).map(|_| KvCache::new(&model.config, CONTEXT + 1)).collect() };
        let mut meta = StepMeta::default();
        for s in 0..batch {
            meta.push_span(s, 0, CONTEXT);
        }
        let prompt: Vec<u32> = (0..batch * CONTEXT).map(|i| (i * 7 % model.config.vocab_size) as u32).collect();
        model.forward(&prompt, &meta, &[0], &mut backend)?;
        let name = format!("{:?} batch {batch}", model.weight_dtype()).to_lowercase();
        Ok(Case { name, model: model.clone(), backend, batch })
    }

    /// Median seconds of `steps` decode steps (each rewrites position CONTEXT: same work each time).
    fn time(&mut self, steps: usize) -> Result<f64, Box<dyn std::error::Error>> {
        let meta = StepMeta { seq: (0..self.batch).collect(), pos: vec![CONTEXT; self.batch] };
        let tokens: Vec<u32> = (0..self.batch as u32).collect();
        let rows: Vec<usize> = (0..self.batch).collect();
        let mut times = Vec::with_capacity(steps);
        for _ in 0..steps {
            let start = Instant::now();
            std::hint::black_box(self.model.forward(&tokens, &meta, &rows, &mut self.backend)?);
            times.push(start.elapsed().as_secs_f64());
        }
        Ok(median(&mut times))
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let (rounds, steps) = (args.first().copied().unwrap_or(7), args.get(1).copied().unwrap_or(20));
    let wide = Model::random(LlamaConfig::named("peer-76m")?, 0)?;
    let half = wide.clone().with_weight_dtype(DType::F16);
    let mut cases = vec![Case::new(&wide, 1)?, Case::new(&wide, 8)?, Case::new(&half, 1)?, Case::new(&half, 8)?];
    drop((wide, half));
    let names: Vec<String> = cases.iter().map(|c| c.name.clone()).collect();
    println!("One decode step of `peer-76m` (64 cached tokens per sequence, ch02's cache), weights kept in f32 and in f16.\n");
    println!("| round | {} (ms) | f32 b8 / b1 | f16 b8 / b1 | f32 / f16 at batch 1 |", names.join(" (ms) | "));
    println!("|---:|{}---:|---:|---:|", "---:|".repeat(cases.len()));
    let mut ratios = [Vec::new(), Vec::new(), Vec::new()];
    for round in 1..=rounds {
        let t: Vec<f64> = cases.iter_mut().map(|c| c.time(steps)).collect::<Result<_, _>>()?;
        let r = [t[1] / t[0], t[3] / t[2], t[0] / t[2]];
        let ms: Vec<String> = t.iter().map(|s| format!("{:.2}", s * 1e3)).collect();
        println!("| {round} | {} | {:.2}× | {:.2}× | {:.2}× |", ms.join(" | "), r[0], r[1], r[2]);
        for (all, v) in ratios.iter_mut().zip(r) {
            all.push(v);
        }
    }
    println!();
    for (name, v) in ["f32 batch 8 / batch 1", "f16 batch 8 / batch 1", "f32 / f16 step at batch 1"].iter().zip(&mut ratios) {
        let (lo, hi) = (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(0.0, f64::max));
        println!("- {name}: median {:.2}× (range {lo:.2}–{hi:.2}×)", median(v));
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo.lines().find_map(|l| l.strip_prefix("model name").and_then(|r| r.split(':').nth(1))).unwrap_or("an unnamed CPU");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "\n*Median step time of {steps} steps per case and round, {rounds} rounds, on {}, {cores} cores, no GPU \
         (shared with other jobs while it ran), with `cargo run --release --example decode_step_ratio -- {rounds} {steps}`.*",
        cpu.trim()
    );
    Ok(())
}
