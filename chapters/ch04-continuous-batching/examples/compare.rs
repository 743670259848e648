//! ch02 vs ch03 vs ch04 on the same exponential-output workload and model, side by side.
//!
//! cargo run --release -p ch04-continuous-batching --example compare -- [requests] [slots] [config] [skip-ch02]
//! e.g. `-- 32 8 bench` (the default). The `bench` model's weights (~390 MB f32) are far larger
//! than any CPU cache, so a decode step is bound by reading them from memory.

use ch00_model::{LlamaConfig, Model};
use ch00_serving::{Engine, RunOptions, RunOutput, WorkloadSpec};
use ch02_kv_cache::KvCacheEngine;
use ch03_static_batching::StaticBatchEngine;
use ch04_continuous_batching::{ContinuousBatchEngine, SlotBudget};

fn percentile(xs: &mut [f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    xs[((xs.len() - 1) as f64 * p).round() as usize]
}

fn row(name: &str, out: &RunOutput) {
    let mut ttft: Vec<f64> = out.outputs.iter().map(|o| o.ttft_s * 1e3).collect();
    // TPOT: per request, (last token − first token) ÷ (tokens − 1), the mean of its gaps.
    let with_gaps = out.outputs.iter().filter(|o| !o.token_latencies_s.is_empty());
    let mut tpot: Vec<f64> =
        with_gaps.map(|o| 1e3 * o.token_latencies_s.iter().sum::<f64>() / o.token_latencies_s.len() as f64).collect();
    // ITL: every gap of every request.
    let mut itl: Vec<f64> = out.outputs.iter().flat_map(|o| o.token_latencies_s.iter().map(|t| t * 1e3)).collect();
    let s = &out.stats;
    println!(
        "{name:<26} {:>8.1} {:>9.0} {:>9.0} {:>8.1} {:>8.1} {:>6.2} {:>7} {:>6} {:>7.2}",
        s.tokens_per_s,
        percentile(&mut ttft, 0.5),
        percentile(&mut ttft, 0.99),
        percentile(&mut tpot, 0.5),
        percentile(&mut itl, 0.99),
        s.slot_utilisation,
        s.wasted_slot_steps,
        s.steps,
        s.wall_s
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().map_or(Ok(32), |a| a.parse())?;
    let slots: usize = args.get(1).map_or(Ok(8), |a| a.parse())?;
    let config = args.get(2).map_or("bench", String::as_str);
    let skip_ch02 = args.get(3).is_some_and(|a| a == "skip-ch02");

    let model = Model::random(LlamaConfig::named(config)?, 0)?;
    let spec = WorkloadSpec::exponential_default(n, 0);
    let requests = spec.generate(model.config.vocab_size);
    let out_tokens: usize = requests.iter().map(|r| r.max_new_tokens).sum();
    println!(
        "model {config} ({:.0} M params), {n} requests, {out_tokens} output tokens, {slots} slots",
        model.config.param_count() as f64 / 1e6
    );
    println!("workload {}", serde_json::to_string(&spec)?);
    println!(
        "{:<26} {:>8} {:>9} {:>9} {:>8} {:>8} {:>6} {:>7} {:>6} {:>7}",
        "stage", "tok/s", "ttft p50", "ttft p99", "tpot p50", "itl p99", "util", "wasted", "steps", "wall s"
    );
    let opts = RunOptions::default();
    let mut engines: Vec<Box<dyn Engine>> = Vec::new();
    if !skip_ch02 {
        engines.push(Box::new(KvCacheEngine::default()));
    }
    engines.push(Box::new(StaticBatchEngine { batch_size: slots, max_len: None }));
    engines.push(Box::new(ContinuousBatchEngine { slots: SlotBudget::Slots(slots), ..Default::default() }));
    let mut tps = Vec::new();
    for mut e in engines {
        let out = e.run(&model, &requests, &opts)?;
        row(e.name(), &out);
        tps.push(out.stats.tokens_per_s);
    }
    let k = tps.len();
    println!("ch04 / ch03 throughput: {:.2}x", tps[k - 1] / tps[k - 2]);
    if !skip_ch02 {
        println!("ch03 / ch02 throughput: {:.2}x", tps[1] / tps[0]);
    }
    Ok(())
}
