//! Batching benches on the `bench` model (weights far beyond any CPU cache, so a decode step is
//! bound by reading them from memory). `KVSERVE_BENCH_CONFIG=tiny` runs the same benches fast.
//!
//! - `batched_decode`: ch03 vs ch02 on equal-length requests: one weight read per step for the
//!   whole batch instead of one per request.
//! - `mixed_lengths`: ch04 vs ch03 on exponential output lengths: no slot waits for the longest
//!   request of someone else's batch.

use ch00_model::{LlamaConfig, Model};
use ch00_serving::{Engine, LengthDist, Request, RunOptions, WorkloadSpec};
use ch02_kv_cache::KvCacheEngine;
use ch03_static_batching::StaticBatchEngine;
use ch04_continuous_batching::{ContinuousBatchEngine, SlotBudget};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

fn model() -> Model {
    let name = std::env::var("KVSERVE_BENCH_CONFIG").unwrap_or_else(|_| "bench".into());
    Model::random(LlamaConfig::named(&name).expect("known config name"), 0).expect("model")
}

fn bench_engines(c: &mut Criterion, group: &str, model: &Model, requests: &[Request], engines: Vec<Box<dyn Engine>>) {
    let tokens: usize = requests.iter().map(|r| r.max_new_tokens).sum();
    let mut g = c.benchmark_group(group);
    g.sample_size(10).measurement_time(Duration::from_secs(20)).throughput(Throughput::Elements(tokens as u64));
    for mut e in engines {
        let name = e.name();
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| e.run(model, requests, &RunOptions::default()).expect("run"))
        });
    }
    g.finish();
}

// ANCHOR: benches
fn batched_decode(c: &mut Criterion) {
    let model = model();
    let spec = WorkloadSpec {
        n_requests: 4,
        prompt_len: LengthDist::Fixed(8),
        output_len: LengthDist::Fixed(8),
        ..WorkloadSpec::exponential_default(4, 0)
    };
    let requests = spec.generate(model.config.vocab_size);
    let engines: Vec<Box<dyn Engine>> =
        vec![Box::new(KvCacheEngine::default()), Box::new(StaticBatchEngine { batch_size: 4, max_len: None })];
    bench_engines(c, "batched_decode", &model, &requests, engines);
}

fn mixed_lengths(c: &mut Criterion) {
    let model = model();
    let spec = WorkloadSpec {
        output_len: LengthDist::Exponential { mean: 12.0, min: 2, max: 64 },
        ..WorkloadSpec::exponential_default(12, 0)
    };
    let requests = spec.generate(model.config.vocab_size);
    let engines: Vec<Box<dyn Engine>> = vec![
        Box::new(StaticBatchEngine { batch_size: 4, max_len: None }),
        Box::new(ContinuousBatchEngine { slots: SlotBudget::Slots(4), ..Default::default() }),
    ];
    bench_engines(c, "mixed_lengths", &model, &requests, engines);
}
// ANCHOR_END: benches

criterion_group!(benches, batched_decode, mixed_lengths);
criterion_main!(benches);
