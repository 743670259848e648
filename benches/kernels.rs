//! The CPU kernels under the engines: one `linear` (the MLP's up projection of the `peer-76m`
//! shape) and one whole decode step of that model, at batch 1, 8 and 32.
//!
//! cargo bench --bench kernels -- --save-baseline before     (on the old kernels)
//! cargo bench --bench kernels -- --baseline before          (on the new ones)
//! python3 scripts/criterion_kernels_table.py > book/src/generated/bench-kernels.md

use ch02_kv_cache::{ContiguousBackend, KvCache};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kvserve::ch00_model::{LlamaConfig, Model, StepMeta};
use std::hint::black_box;

const BATCHES: [usize; 3] = [1, 8, 32];
/// Tokens already in each sequence's cache when the measured decode step runs.
const CONTEXT: usize = 64;

fn model() -> Model {
    Model::random(LlamaConfig::named("peer-76m").expect("named config"), 0).expect("model")
}

/// Deterministic activations in [-1, 1): (rows, cols).
fn activations(rows: usize, cols: usize) -> ndarray::Array2<f32> {
    ndarray::Array2::from_shape_fn((rows, cols), |(r, c)| ((r * 31 + c * 17) % 97) as f32 / 48.5 - 1.0)
}

fn linear(c: &mut Criterion) {
    let model = model();
    let w = kvserve::ch00_model::cpu::packed::Packed::new(&model.layers[0].w_up().view()); // (intermediate, hidden)
    let mut g = c.benchmark_group("linear");
    g.sample_size(20);
    for &b in &BATCHES {
        let x = activations(b, w.cols());
        let mut y = ndarray::Array2::<f32>::zeros((b, w.rows()));
        g.throughput(Throughput::Bytes((w.rows() * w.cols() * 4) as u64));
        g.bench_with_input(BenchmarkId::from_parameter(b), &x, |bench, x| {
            bench.iter(|| kvserve::ch00_model::ops::linear(&x.view(), &w, &mut y));
            black_box(&y);
        });
    }
    g.finish();
}

fn decode_step(c: &mut Criterion) {
    let model = model();
    let mut g = c.benchmark_group("decode_step");
    g.sample_size(10);
    for &b in &BATCHES {
        // b sequences of CONTEXT tokens, prefilled once; the measured step decodes one token each.
        let mut backend = ContiguousBackend { slots: (0..b).map(|_| KvCache::new(&model.config, CONTEXT + 1)).collect() };
        let mut meta = StepMeta::default();
        for s in 0..b {
            meta.push_span(s, 0, CONTEXT);
        }
        let prompt: Vec<u32> = (0..b * CONTEXT).map(|i| (i * 7 % model.config.vocab_size) as u32).collect();
        model.forward(&prompt, &meta, &[0], &mut backend).expect("prefill");
        let step = StepMeta { seq: (0..b).collect(), pos: vec![CONTEXT; b] };
        let tokens: Vec<u32> = (0..b as u32).collect();
        let rows: Vec<usize> = (0..b).collect();
        g.throughput(Throughput::Elements(b as u64));
        g.bench_function(BenchmarkId::from_parameter(b), |bench| {
            bench.iter(|| black_box(model.forward(&tokens, &step, &rows, &mut backend).expect("step")))
        });
    }
    g.finish();
}

criterion_group!(benches, linear, decode_step);
criterion_main!(benches);
