//! Chapter 5 against chapter 4: the same tokens for every request (also under preemption), the
//! model-free accounting predicts the engines step for step, and the capacity figures the book
//! quotes are deterministic counts.

use ch04_continuous_batching::{ContinuousBatchEngine, SlotBudget};
use ch05_paged_attention::{simulate_blocks, simulate_slots, KvBudget, MemSeries, PagedEngine};
use bookgen::capacity::{accounting_run, capacity_report, real_run, AccountingSpec, CapacityOptions, RealRunSpec};
use bookgen::shape::Shape;
use ch02_kv_cache::KvCacheEngine;
use kvserve::ch00_model::{kv_bytes_per_token, DType, LlamaConfig, Model, SamplingParams};
use kvserve::ch00_serving::{split_samples, Arrivals, Engine, LengthDist, Request, RunOptions, WorkloadSpec};

fn tiny() -> Model {
    Model::random(LlamaConfig::named("tiny").unwrap(), 0).unwrap()
}

/// 16 requests at once: prompts 4..=24 tokens, outputs exponential (mean 16, at most 48).
fn workload(n: usize, seed: u64) -> Vec<Request> {
    WorkloadSpec {
        n_requests: n,
        prompt_len: LengthDist::Uniform { lo: 4, hi: 24 },
        output_len: LengthDist::Exponential { mean: 16.0, min: 1, max: 48 },
        arrivals: Arrivals::AllAtOnce,
        seed,
    }
    .generate(512)
}

fn ch04(slots: usize) -> ContinuousBatchEngine {
    ContinuousBatchEngine { slots: SlotBudget::Slots(slots), max_len: Some(96), ..Default::default() }
}

/// A pool of `blocks` blocks of 4 tokens; the pool alone limits how many run.
fn ch05(blocks: usize) -> PagedEngine {
    let budget = KvBudget::Blocks(blocks);
    PagedEngine { budget, block_size: 4, max_len: Some(96), max_running: Some(usize::MAX), ..Default::default() }
}

#[test]
fn ch05_gives_ch04_tokens_for_every_request_even_under_preemption() {
    let model = tiny();
    let requests = workload(16, 3);
    let opts = RunOptions { record_logits: true, ..Default::default() };
    let want = ch04(3).run(&model, &requests, &opts).unwrap();
    // 20 blocks of 4 tokens = 80 tokens: the largest request (24 + 48) fits, a few at once do not.
    let mut paged = ch05(20);
    let got = paged.run(&model, &requests, &opts).unwrap();
    assert!(got.stats.preemptions > 0, "the small pool must force preemption");
    assert_eq!((want.outputs.len(), got.outputs.len()), (requests.len(), requests.len()));
    for (a, b) in want.outputs.iter().zip(&got.outputs) {
        assert_eq!(a.tokens, b.tokens, "request {}", a.id);
        assert_eq!((a.logits.len(), b.logits.len()), (a.tokens.len(), b.tokens.len()), "a logits row per token");
        for (x, y) in a.logits.iter().zip(&b.logits) {
            assert_eq!(x.len(), y.len());
            let d = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
            assert!(d < 1e-4, "request {}: logits differ by {d}", a.id);
        }
    }
    let info = paged.last_run.unwrap();
    assert_eq!(info.preemptions, got.stats.preemptions);
    assert!((1..=20).contains(&info.peak_blocks_used));
}

#[test]
fn the_accounting_run_predicts_both_engines_step_for_step() {
    let model = tiny();
    let requests = workload(16, 5);
    let per_token = kv_bytes_per_token(&model.config, DType::F32);
    let opts = RunOptions { trace: true, ..Default::default() };

    let out = ch04(3).run(&model, &requests, &opts).unwrap();
    let engine = MemSeries::from_trace(&out.trace, Some(96 * per_token), out.stats.generated_tokens);
    let sim = simulate_slots(&requests, ch04(3).scheduler_config(&model).unwrap().0, 96, per_token).unwrap();
    assert_eq!(engine.steps, sim.steps);
    assert_eq!(engine.generated_tokens, sim.generated_tokens);

    let mut paged = ch05(40);
    let out = paged.run(&model, &requests, &opts).unwrap();
    let engine = MemSeries::from_trace(&out.trace, None, out.stats.generated_tokens);
    let sim = simulate_blocks(&requests, ch05(40).scheduler_config(&model).unwrap().0, 96, per_token).unwrap();
    assert!(sim.preemptions > 0, "the pool should be small enough to preempt");
    assert_eq!(engine.steps, sim.steps);
    assert_eq!((engine.preemptions, engine.generated_tokens), (sim.preemptions, sim.generated_tokens));
}

#[test]
fn the_real_run_reports_both_designs_under_one_budget() {
    let spec = RealRunSpec {
        shape: Shape::named("tiny").unwrap(),
        max_len: 96,
        slots: 3,
        block_size: 4,
        workload: WorkloadSpec {
            n_requests: 16,
            prompt_len: LengthDist::Uniform { lo: 4, hi: 24 },
            output_len: LengthDist::Exponential { mean: 16.0, min: 1, max: 48 },
            arrivals: Arrivals::AllAtOnce,
            seed: 1,
        },
    };
    let run = real_run(&tiny(), &spec).unwrap();
    assert_eq!(run.budget_bytes, 3 * 96 * kv_bytes_per_token(&LlamaConfig::named("tiny").unwrap(), DType::F32));
    assert_eq!((run.num_slots, run.num_blocks), (3, 72));
    assert_eq!(run.contiguous.peak_running, 3);
    assert!(run.paged.peak_running > run.contiguous.peak_running);
    assert!(run.paged.waste_pct < run.contiguous.waste_pct);
    assert!(run.contiguous.tokens_per_s.is_some() && run.paged.tokens_per_s.is_some());
    assert_eq!(run.contiguous.generated_tokens, run.paged.generated_tokens);
}

#[test]
fn a_budget_too_small_is_an_error() {
    let spec = RealRunSpec { shape: Shape::named("tiny").unwrap(), slots: 0, max_len: 32, ..RealRunSpec::default() };
    assert!(real_run(&tiny(), &spec).is_err());
    let spec = AccountingSpec { weight_bytes: 79 << 30, ..AccountingSpec::default() };
    let err = accounting_run(&spec).unwrap_err().to_string();
    assert!(err.contains("holds no slot"), "{err}");
    let spec = AccountingSpec { block_size: 0, ..AccountingSpec::default() };
    assert!(accounting_run(&spec).is_err());
}

/// The book's 7B numbers: the card model's KV budget on an "80 GB" H100 (`bookgen::card::seven_b`),
/// 2000 requests. Every figure of the accounting run is a count (no clock), so the whole report is
/// a snapshot.
#[test]
fn the_7b_accounting_run_is_deterministic() {
    let opts = CapacityOptions { real: None, ..CapacityOptions::full() };
    let report = capacity_report(&opts).unwrap();
    let a = &report.accounting;
    assert_eq!(a.budget_bytes, bookgen::card::seven_b().kv_budget);
    assert_eq!(a.kv_bytes_per_token, 512 * 1024);
    assert_eq!((a.num_slots, a.num_blocks), (57, 7418));
    assert_eq!(a.contiguous.peak_running, 57);
    assert_eq!(a.contiguous.generated_tokens, a.paged.generated_tokens);
    // Concurrency in the same memory (about max_len ÷ mean length on this workload, inside the
    // range the paper's throughput gain is quoted in) and the paper's 20–38% of KV used:
    assert!((2.0..=4.0).contains(&a.queued_running_ratio), "{}", a.queued_running_ratio);
    assert!((62.0..=80.0).contains(&a.contiguous.waste_pct), "{}", a.contiguous.waste_pct);
    assert!(a.paged.waste_pct < 4.0);
    // A shared 256-token system prompt: found in the prefix cache, and more requests fit.
    let p = report.prefix_sharing.as_ref().unwrap();
    assert!(p.hit_rate > 0.3 && p.shared_running_queued > p.paged_running_queued, "{p:?}");
    let json = serde_json::to_value(&report).unwrap();
    for design in ["contiguous", "paged"] {
        let d = &json["accounting"][design];
        for key in [
            "peak_running",
            "mean_running",
            "kv_bytes_allocated",
            "kv_bytes_used",
            "waste_pct",
            "preemptions",
            "tokens_per_s",
        ] {
            assert!(d.get(key).is_some(), "{design} lacks {key}");
        }
        assert!(d["tokens_per_s"].is_null());
    }
    insta::assert_yaml_snapshot!("capacity_7b_accounting", json);
}

/// The CPU run's counts in the book (all but tokens/s) without running the bench model: the
/// accounting of the same budget and workload, which the test above shows is the engines' own.
#[test]
fn the_cpu_run_counts_are_deterministic() {
    let run = accounting_run(&RealRunSpec::default().as_accounting()).unwrap();
    assert_eq!((run.num_slots, run.num_blocks, run.budget_bytes), (4, 64, 16 << 20));
    let (c, p) = (&run.contiguous, &run.paged);
    assert_eq!((c.peak_running, p.peak_running), (4, 23));
    assert_eq!((c.preemptions, p.preemptions), (0, 27));
    assert_eq!((c.steps, p.steps), (609, 253));
    let r1 = |x: f64| (x * 10.0).round() / 10.0;
    assert_eq!((r1(c.mean_running_queued), r1(p.mean_running_queued)), (4.0, 13.0));
    assert_eq!((r1(c.waste_pct), r1(p.waste_pct)), (67.9, 8.3));
}

/// With chapter 4's limits and memory to spare, paging changes where K/V lives, not who runs:
/// the default engines (8 slots; the memory of 8 slots in blocks) run the same schedule.
#[test]
fn with_equal_limits_ch05_runs_ch04s_schedule() {
    let model = tiny();
    let requests = workload(24, 7);
    let opts = RunOptions { trace: true, ..Default::default() };
    let mut slots = ContinuousBatchEngine { max_len: Some(96), ..Default::default() };
    let mut blocks = PagedEngine { max_len: Some(96), ..Default::default() };
    let (c, p) = (slots.scheduler_config(&model).unwrap().0, blocks.scheduler_config(&model).unwrap().0);
    assert_eq!((c.max_running, c.max_tokens_per_step), (p.max_running, p.max_tokens_per_step));
    let who = |o: &kvserve::ch00_serving::RunOutput| -> Vec<Vec<(u64, usize)>> {
        o.trace.iter().map(|s| { let mut v: Vec<_> = s.entries.iter().map(|e| (e.request, e.tokens)).collect(); v.sort(); v }).collect()
    };
    let (a, b) = (slots.run(&model, &requests, &opts).unwrap(), blocks.run(&model, &requests, &opts).unwrap());
    assert_eq!(a.stats.peak_running, 8);
    assert_eq!(who(&a), who(&b));
}

/// Requests arriving over time (a Poisson process) and a pool that forces preemption: the tokens
/// still do not depend on who shared a step with whom.
#[test]
fn ch05_gives_ch04_tokens_with_poisson_arrivals() {
    let model = tiny();
    let spec = WorkloadSpec {
        n_requests: 10,
        prompt_len: LengthDist::Uniform { lo: 4, hi: 24 },
        output_len: LengthDist::Exponential { mean: 16.0, min: 1, max: 48 },
        arrivals: Arrivals::Poisson { rate_per_s: 400.0 },
        seed: 9,
    };
    let requests = spec.generate(512);
    let want = ch04(3).run(&model, &requests, &RunOptions::default()).unwrap();
    let got = ch05(20).run(&model, &requests, &RunOptions::default()).unwrap();
    let tokens = |o: &kvserve::ch00_serving::RunOutput| o.outputs.iter().map(|r| r.tokens.clone()).collect::<Vec<_>>();
    assert_eq!(tokens(&want), tokens(&got));
}

/// Sampled requests, `n` each, at temperature 1: chapter 5 with copy-on-write against every
/// sample run alone, as its own request with seed `seed + i`, by chapter 2.
fn parallel_sampling_workload(n: usize) -> Vec<Request> {
    workload(6, 11)
        .into_iter()
        .map(|r| {
            let sampling = SamplingParams { temperature: 1.0, top_k: 40, top_p: 0.95, seed: 50 + 7 * r.id };
            Request { n, sampling, ..r }
        })
        .collect()
}

#[test]
fn each_sample_equals_a_lone_run_with_its_seed_and_cow_saves_blocks() {
    let model = tiny();
    let requests = parallel_sampling_workload(4);
    let alone = split_samples(&requests);
    let want = KvCacheEngine { max_len: Some(96) }.run(&model, &alone, &RunOptions::default()).unwrap();
    // A pool that holds everything at once, so peak blocks measure sharing, not the pool.
    let mut cow = ch05(400);
    let got = cow.run(&model, &requests, &RunOptions::default()).unwrap();
    assert_eq!(got.outputs.len(), 24);
    assert_eq!(want.outputs.len(), got.outputs.len());
    for (i, (a, b)) in want.outputs.iter().zip(&got.outputs).enumerate() {
        assert_eq!((b.id, b.sample), (requests[i / 4].id, i % 4));
        assert_eq!(a.tokens, b.tokens, "request {} sample {}", b.id, b.sample);
    }
    let samples_differ = got.outputs.chunks(4).any(|c| c.iter().any(|o| o.tokens != c[0].tokens));
    assert!(samples_differ, "temperature 1 should make samples differ");
    let mut independent = ch05(400);
    let same = independent.run(&model, &alone, &RunOptions::default()).unwrap();
    assert_eq!(same.outputs.iter().map(|o| &o.tokens).collect::<Vec<_>>(), got.outputs.iter().map(|o| &o.tokens).collect::<Vec<_>>());
    let (c, i) = (cow.last_run.unwrap(), independent.last_run.unwrap());
    assert!(c.peak_blocks_used < i.peak_blocks_used, "copy-on-write {} vs independent {}", c.peak_blocks_used, i.peak_blocks_used);
    assert!(c.cow_copies > 0 && i.cow_copies == 0);
}

#[test]
fn samples_stay_their_own_under_preemption_and_in_every_stage() {
    let model = tiny();
    let requests = parallel_sampling_workload(3);
    let alone = split_samples(&requests);
    let want = KvCacheEngine { max_len: Some(96) }.run(&model, &alone, &RunOptions::default()).unwrap();
    let mut small = ch05(24);
    let got = small.run(&model, &requests, &RunOptions::default()).unwrap();
    assert!(got.stats.preemptions > 0, "the small pool must force preemption");
    assert_eq!(want.outputs.len(), got.outputs.len());
    for (a, b) in want.outputs.iter().zip(&got.outputs) {
        assert_eq!(a.tokens, b.tokens, "request {} sample {}", b.id, b.sample);
    }
    for mut engine in kvserve::stages() {
        let out = engine.run(&model, &requests, &RunOptions::default()).unwrap();
        assert_eq!(out.outputs.len(), want.outputs.len(), "{}", engine.name());
        for (a, b) in want.outputs.iter().zip(&out.outputs) {
            assert_eq!(a.tokens, b.tokens, "{}: request {} sample {}", engine.name(), b.id, b.sample);
        }
    }
}

/// The bench's parallel-sampling counts: with everything in memory, copy-on-write needs fewer
/// blocks than the same samples sent as independent requests; with memory the limit, more
/// samples run at once. Counts only, so a snapshot.
#[test]
fn the_parallel_sampling_accounting_is_deterministic() {
    let report = bookgen::sampling::sampling_report(None, None).unwrap();
    let [fits, queued] = &report.accounting[..] else { panic!("two accounting runs") };
    let (cow, ind) = (&fits.designs[0], &fits.designs[1]);
    assert_eq!((cow.generated_tokens, cow.preemptions, ind.preemptions), (ind.generated_tokens, 0, 0));
    assert!(cow.peak_blocks_used.unwrap() < ind.peak_blocks_used.unwrap(), "{cow:?} vs {ind:?}");
    assert!(cow.cow_copies > 0 && ind.cow_copies == 0);
    let (cow, ind) = (&queued.designs[0], &queued.designs[1]);
    assert!(cow.mean_running_queued.unwrap() > ind.mean_running_queued.unwrap(), "{cow:?} vs {ind:?}");
    assert!(cow.steps < ind.steps);
    insta::assert_yaml_snapshot!("parallel_sampling_accounting", serde_json::to_value(&report.accounting).unwrap());
}

#[test]
fn the_parallel_sampling_real_run_gives_every_design_the_same_tokens() {
    let spec = RealRunSpec { shape: Shape::named("tiny").unwrap(), max_len: 96, slots: 3, block_size: 4, ..bookgen::sampling::real_spec() };
    let run = bookgen::sampling::real_run(&tiny(), &spec, 3).unwrap();
    assert_eq!(run.same_tokens, Some(true));
    let [cow, ind, ch04] = &run.designs[..] else { panic!("three designs") };
    assert_eq!((cow.generated_tokens, ch04.generated_tokens), (ind.generated_tokens, ind.generated_tokens));
    assert!(cow.cow_copies > 0 && ch04.peak_blocks_used.is_none());
    assert!(cow.mean_running > ind.mean_running, "sharing fits more samples: {cow:?} vs {ind:?}");
}

mod any_workload {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
        /// Any small workload, any block size, any pool that fits the largest request, prefix
        /// sharing on or off, chunked prefill on or off with any token budget (so chunk edges
        /// fall mid-block, on a block edge, or one token from the end): every request gets
        /// exactly the tokens it gets alone (chapter 2).
        #[test]
        fn paged_tokens_equal_one_at_a_time_tokens(
            reqs in proptest::collection::vec((proptest::collection::vec(3u32..6, 1..14), 1usize..10), 1..6),
            block_size in 1usize..6,
            extra in 0usize..6,
            share: bool,
            chunk_budget in proptest::option::of(1usize..12),
        ) {
            let model = tiny();
            let requests: Vec<Request> = reqs
                .iter()
                .enumerate()
                .map(|(i, (p, n))| Request { ignore_eos: true, ..Request::greedy(i as u64, p.clone(), *n) })
                .collect();
            let largest = reqs.iter().map(|(p, n)| (p.len() + n).div_ceil(block_size)).max().unwrap();
            let mut paged = PagedEngine {
                budget: KvBudget::Blocks(largest + extra),
                block_size,
                max_len: Some(64),
                watermark_blocks: Some(0),
                prefix_sharing: share,
                max_running: Some(usize::MAX),
                max_tokens_per_step: chunk_budget,
                chunked_prefill: chunk_budget.is_some(),
                last_run: None,
            };
            let want = KvCacheEngine { max_len: Some(64) }.run(&model, &requests, &RunOptions::default()).unwrap();
            let got = paged.run(&model, &requests, &RunOptions::default()).unwrap();
            prop_assert_eq!((want.outputs.len(), got.outputs.len()), (requests.len(), requests.len()));
            for (a, b) in want.outputs.iter().zip(&got.outputs) {
                prop_assert_eq!(&a.tokens, &b.tokens, "request {}", a.id);
            }
        }
    }
}
