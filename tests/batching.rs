//! Batching changes who runs when, never what a request produces: ch03 and ch04 give every request
//! exactly the tokens ch02 gives it alone, in any batch composition and arrival order.

use ch00_model::{kv_bytes_per_token, DType, LlamaConfig, Model, ModelError};
use ch00_serving::{Arrivals, Engine, FinishReason, LengthDist, Phase, Request, RunOptions, RunOutput, WorkloadSpec};
use ch02_kv_cache::KvCacheEngine;
use ch03_static_batching::StaticBatchEngine;
use ch04_continuous_batching::{ContinuousBatchEngine, SlotBudget};
use proptest::prelude::*;

fn tiny() -> Model {
    Model::random(LlamaConfig::named("tiny").unwrap(), 0).unwrap()
}

/// Each request run alone through ch02: the reference tokens.
fn alone(model: &Model, requests: &[Request], max_len: usize) -> Vec<(Vec<u32>, FinishReason)> {
    let mut ch02 = KvCacheEngine { max_len: Some(max_len) };
    requests
        .iter()
        .map(|r| {
            let out = ch02.run(model, std::slice::from_ref(r), &RunOptions::default()).unwrap();
            (out.outputs[0].tokens.clone(), out.outputs[0].finish)
        })
        .collect()
}

/// Same tokens as alone, outputs in input order, and in the trace every request is prefilled
/// exactly once and fed exactly one step per generated token.
fn check_run(
    name: &str,
    out: &RunOutput,
    requests: &[Request],
    want: &[(Vec<u32>, FinishReason)],
) -> Result<(), TestCaseError> {
    prop_assert_eq!((out.outputs.len(), want.len()), (requests.len(), requests.len()));
    for ((o, r), (tokens, finish)) in out.outputs.iter().zip(requests).zip(want) {
        prop_assert_eq!(o.id, r.id);
        prop_assert_eq!(&o.tokens, tokens, "{} request {}", name, r.id);
        prop_assert_eq!(o.finish, *finish);
        let entries = out.trace.iter().flat_map(|s| &s.entries).filter(|e| e.request == r.id);
        let (mut prefills, mut fed_steps) = (0, 0);
        for e in entries {
            prefills += usize::from(e.phase == Phase::Prefill);
            fed_steps += usize::from(e.phase != Phase::Padding);
        }
        let expected_prefills = usize::from(r.max_new_tokens > 0);
        prop_assert_eq!(prefills, expected_prefills, "{} request {} prefilled {} times", name, r.id, prefills);
        prop_assert_eq!(fed_steps, o.tokens.len(), "{} request {}", name, r.id);
    }
    let generated: usize = out.outputs.iter().map(|o| o.tokens.len()).sum();
    prop_assert_eq!(out.stats.generated_tokens, generated);
    Ok(())
}

fn workload() -> impl Strategy<Value = (Vec<Request>, usize)> {
    (1usize..8, 1usize..16, 1.0f64..12.0, any::<bool>(), any::<u64>(), 20usize..48, Just(())).prop_flat_map(
        |(n, prompt_hi, mean, poisson, seed, max_len, ())| {
            let spec = WorkloadSpec {
                n_requests: n,
                prompt_len: LengthDist::Uniform { lo: 1, hi: prompt_hi },
                output_len: LengthDist::Exponential { mean, min: 0, max: 40 },
                // A fast Poisson process: requests arrive while others run (a few ms of waiting).
                arrivals: if poisson { Arrivals::Poisson { rate_per_s: 3000.0 } } else { Arrivals::AllAtOnce },
                seed,
            };
            let requests = spec.generate(512);
            // Any submission order: arrival times travel with their requests.
            (Just(requests).prop_shuffle(), Just(max_len))
        },
    )
}

// ANCHOR: property
proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn batching_engines_match_ch02_alone(
        (requests, max_len) in workload(),
        batch in 1usize..5,
        slots in 1usize..5,
        max_running in 1usize..6,
        extra_tokens in 0usize..24,
        by_budget in any::<bool>(),
    ) {
        let model = tiny();
        let want = alone(&model, &requests, max_len);
        let opts = RunOptions { trace: true, ..Default::default() };

        let mut engine = StaticBatchEngine { batch_size: batch, max_len: Some(max_len) };
        let out = engine.run(&model, &requests, &opts).unwrap();
        check_run("ch03", &out, &requests, &want)?;

        let slot_bytes = max_len as u64 * kv_bytes_per_token(&model.config, DType::F32);
        let slot_budget = if by_budget {
            SlotBudget::KvBytes(slots as u64 * slot_bytes + slot_bytes / 2)
        } else {
            SlotBudget::Slots(slots)
        };
        let longest_prompt = requests.iter().map(|r| r.prompt.len()).max().unwrap_or(1);
        let mut ch04 = ContinuousBatchEngine {
            slots: slot_budget,
            max_running: Some(max_running),
            max_tokens_per_step: Some(longest_prompt.max(max_running.min(slots)) + extra_tokens),
            max_len: Some(max_len),
        };
        let out = ch04.run(&model, &requests, &opts).unwrap();
        check_run("ch04", &out, &requests, &want)?;
        prop_assert_eq!(out.stats.wasted_slot_steps, 0);
        prop_assert!(out.stats.peak_running <= max_running.min(slots));
        prop_assert_eq!(out.stats.kv_bytes_allocated, slots as u64 * slot_bytes);
    }
}
// ANCHOR_END: property

/// The trace as text: one line per step, `slot:request/phase` for every row.
fn trace_lines(out: &RunOutput) -> Vec<String> {
    out.trace
        .iter()
        .map(|s| {
            let rows: Vec<String> = s
                .entries
                .iter()
                .map(|e| {
                    let phase = match e.phase {
                        Phase::Prefill => format!("prefill({})", e.tokens),
                        Phase::Decode => "decode".into(),
                        Phase::Padding => "padding".into(),
                    };
                    format!("{}:r{} {phase}", e.slot, e.request)
                })
                .collect();
            format!("step {:>2}: {}", s.step, rows.join(" | "))
        })
        .collect()
}

fn small_workload() -> Vec<Request> {
    [(3, 5), (2, 2), (4, 7), (1, 1), (2, 3)]
        .iter()
        .enumerate()
        .map(|(i, &(p, n))| Request { ignore_eos: true, ..Request::greedy(i as u64, vec![7; p], n) })
        .collect()
}

#[test]
fn static_and_continuous_traces() {
    let model = tiny();
    let requests = small_workload();
    let opts = RunOptions { trace: true, ..Default::default() };
    let s = StaticBatchEngine { batch_size: 2, max_len: Some(32) }.run(&model, &requests, &opts).unwrap();
    insta::assert_yaml_snapshot!("static_trace", trace_lines(&s));
    let mut ch04 = ContinuousBatchEngine { slots: SlotBudget::Slots(2), max_len: Some(32), ..Default::default() };
    let c = ch04.run(&model, &requests, &opts).unwrap();
    insta::assert_yaml_snapshot!("continuous_trace", trace_lines(&c));
    // Same work, fewer steps: continuous batching never holds a slot for a finished request.
    assert_eq!(s.stats.generated_tokens, c.stats.generated_tokens);
    assert!(c.stats.steps < s.stats.steps, "{} vs {}", c.stats.steps, s.stats.steps);
    assert!(s.stats.wasted_slot_steps > 0 && c.stats.wasted_slot_steps == 0);
    assert!(c.stats.slot_utilisation > s.stats.slot_utilisation);
}

#[test]
fn bad_settings_are_clear_errors() {
    let model = tiny();
    let requests = small_workload();
    let opts = RunOptions::default();
    let e = StaticBatchEngine { batch_size: 0, max_len: None }.run(&model, &requests, &opts).unwrap_err();
    assert!(e.to_string().contains("batch size"), "{e}");

    let slot_bytes = 32 * kv_bytes_per_token(&model.config, DType::F32);
    let mut small =
        ContinuousBatchEngine { slots: SlotBudget::KvBytes(slot_bytes - 1), max_len: Some(32), ..Default::default() };
    let e = small.run(&model, &requests, &opts).unwrap_err();
    assert!(
        matches!(e, ModelError::InvalidSettings(_)) && e.to_string().contains("smaller than one request's slot"),
        "{e}"
    );

    let too_long = [Request::greedy(0, vec![7; 33], 2)];
    for mut engine in [
        Box::new(StaticBatchEngine { batch_size: 2, max_len: Some(32) }) as Box<dyn Engine>,
        Box::new(ContinuousBatchEngine { max_len: Some(32), ..Default::default() }),
    ] {
        let e = engine.run(&model, &too_long, &opts).unwrap_err();
        assert!(matches!(e, ModelError::PromptTooLong { len: 33, max: 32, .. }), "{}: {e}", engine.name());
    }
}
