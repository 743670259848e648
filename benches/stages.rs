//! ch02 (KV cache) against ch01 (recompute) on the same model and prompt, at growing generation
//! lengths: the gap widens with length because ch01's cost per token grows with the sequence.
//!
//! cargo bench --bench stages        (then: python3 scripts/criterion_table.py)

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kvserve::ch00_model::{LlamaConfig, Model};
use kvserve::ch00_serving::{Request, RunOptions};

fn generation_lengths(c: &mut Criterion) {
    // The tiny shape with room for 512 new tokens; random weights, greedy, EOS ignored.
    let config = LlamaConfig { max_position_embeddings: 1024, ..LlamaConfig::named("tiny").unwrap() };
    let model = Model::random(config, 0).unwrap();
    let prompt: Vec<u32> = (0..16).map(|i| 3 + i * 7).collect();
    let mut group = c.benchmark_group("generate");
    group.sample_size(10);
    for &n in &[32usize, 128, 512] {
        let request = Request { ignore_eos: true, ..Request::greedy(0, prompt.clone(), n) };
        group.throughput(Throughput::Elements(n as u64));
        for mut engine in kvserve::stages().into_iter().take(2) {
            let name = engine.name();
            group.bench_with_input(BenchmarkId::new(name, n), &request, |b, r| {
                b.iter(|| engine.run(&model, std::slice::from_ref(r), &RunOptions::default()).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, generation_lengths);
criterion_main!(benches);
