//! Chapter 5 against chapter 4 on one workload, and the cost of the block size: a decode step's
//! attention walks the block table, so smaller blocks mean more indirections per token.

use ch02_kv_cache::{ContiguousBackend, KvCache};
use ch04_continuous_batching::{ContinuousBatchEngine, SlotBudget};
use ch05_paged_attention::{KvBudget, PagedBackend, PagedEngine, PagedKvPool};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kvserve::ch00_model::{LlamaConfig, Model, StepMeta};
use kvserve::ch00_serving::{Engine, RunOptions, WorkloadSpec};
use std::hint::black_box;

/// The whole workload, ch04 vs ch05 under the same KV memory (4 slots of 256 tokens).
fn engines(c: &mut Criterion) {
    let model = Model::random(LlamaConfig::named("tiny").unwrap(), 0).unwrap();
    let requests = WorkloadSpec::exponential_default(16, 0).generate(model.config.vocab_size);
    let mut g = c.benchmark_group("ch04_vs_ch05_same_memory");
    g.sample_size(10);
    g.bench_function("ch04-continuous-batching", |b| {
        let mut e = ContinuousBatchEngine { slots: SlotBudget::Slots(4), max_len: Some(256), ..Default::default() };
        b.iter(|| black_box(e.run(&model, &requests, &RunOptions::default()).unwrap()))
    });
    g.bench_function("ch05-paged-attention", |b| {
        let mut e = PagedEngine { budget: KvBudget::Slots(4), max_len: Some(256), ..Default::default() };
        b.iter(|| black_box(e.run(&model, &requests, &RunOptions::default()).unwrap()))
    });
    g.finish();
}

/// One decode step (8 sequences of 512 cached tokens) through the contiguous backend and through
/// the paged backend with blocks of 8, 16, 32 and 128 tokens.
fn decode_attention(c: &mut Criterion) {
    let model = Model::random(LlamaConfig::named("tiny").unwrap(), 0).unwrap();
    let (seqs, ctx) = (8usize, 512usize);
    let tokens = vec![5u32; seqs];
    let mut meta = StepMeta::default();
    for s in 0..seqs {
        meta.push_span(s, ctx - 1, 1);
    }
    let logits_for: Vec<usize> = (0..seqs).collect();
    let mut g = c.benchmark_group("decode_step_attention");
    g.sample_size(20);
    g.bench_function("contiguous", |b| {
        let mut backend = ContiguousBackend { slots: (0..seqs).map(|_| KvCache::new(&model.config, ctx)).collect() };
        b.iter(|| black_box(model.forward(&tokens, &meta, &logits_for, &mut backend).unwrap()))
    });
    for bs in [8usize, 16, 32, 128] {
        let per_seq = ctx.div_ceil(bs);
        let pool = PagedKvPool::new(&model.config, seqs * per_seq, bs).unwrap();
        // Interleave the sequences' blocks, as a busy pool would.
        let tables = (0..seqs).map(|s| (0..per_seq).map(|i| i * seqs + s).collect()).collect();
        let mut backend = PagedBackend { pool, tables };
        g.bench_with_input(BenchmarkId::new("paged", bs), &bs, |b, _| {
            b.iter(|| black_box(model.forward(&tokens, &meta, &logits_for, &mut backend).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, engines, decode_attention);
criterion_main!(benches);
