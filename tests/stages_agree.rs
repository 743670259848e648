//! Every stage produces exactly the tokens of the stage before it, and logits within 1e-4.

use kvserve::ch00_model::{LlamaConfig, Model, ModelError, SamplingParams};
use kvserve::ch00_serving::{FinishReason, Request, RunOptions, RunOutput};

fn tiny() -> Model {
    Model::random(LlamaConfig::named("tiny").unwrap(), 0).unwrap()
}

fn prompts() -> Vec<Vec<u32>> {
    vec![vec![1, 17, 42, 99, 3], vec![1, 5], vec![1, 200, 201, 202, 203, 204, 205, 206, 207, 400, 11], vec![7]]
}

fn workload(max_new: usize) -> Vec<Request> {
    prompts().into_iter().enumerate().map(|(i, p)| Request::greedy(i as u64, p, max_new)).collect()
}

// ANCHOR: every_stage_matches
fn run_all(model: &Model, requests: &[Request]) -> Vec<(String, RunOutput)> {
    let opts = RunOptions { record_logits: true, ..Default::default() };
    kvserve::stages()
        .into_iter()
        .map(|mut e| (e.name().to_string(), e.run(model, requests, &opts).unwrap()))
        .collect()
}

#[test]
fn every_stage_matches_the_one_before() {
    let model = tiny();
    let requests = workload(12);
    let runs = run_all(&model, &requests);
    for pair in runs.windows(2) {
        let ((a_name, a), (b_name, b)) = (&pair[0], &pair[1]);
        let n = requests.len();
        assert_eq!((a.outputs.len(), b.outputs.len()), (n, n), "{a_name}, {b_name}: one output per request");
        for (x, y) in a.outputs.iter().zip(&b.outputs) {
            assert_eq!(x.tokens, y.tokens, "{b_name} differs from {a_name} on request {}", x.id);
            let rows = (x.tokens.len(), y.tokens.len());
            assert_eq!((x.logits.len(), y.logits.len()), rows, "a logits row per token");
            for (lx, ly) in x.logits.iter().zip(&y.logits) {
                assert_eq!(lx.len(), ly.len());
                let max_diff = lx.iter().zip(ly).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
                assert!(max_diff < 1e-4, "{b_name} vs {a_name}: logits differ by {max_diff}");
            }
        }
    }
    let tokens: Vec<Vec<u32>> = runs[0].1.outputs.iter().map(|o| o.tokens.clone()).collect();
    insta::assert_yaml_snapshot!("tiny_greedy_tokens", tokens);
    // Rows through the model: ch01 recomputes p + k rows for its k-th token, ch02 computes each
    // token once (the last one is never fed), and batching changes who runs, not how much.
    let (mut naive, mut cached) = (0, 0);
    assert_eq!(requests.len(), runs[0].1.outputs.len());
    for (r, o) in requests.iter().zip(&runs[0].1.outputs) {
        let (p, g) = (r.prompt.len() as u64, o.tokens.len() as u64);
        naive += (0..g).map(|k| p + k).sum::<u64>();
        cached += p + g - 1;
    }
    let rows: Vec<u64> = runs.iter().map(|(_, r)| r.stats.token_rows).collect();
    assert_eq!(rows, [naive, cached, cached, cached, cached], "ch01..ch05 (no padding: equal lengths)");
}
// ANCHOR_END: every_stage_matches

#[test]
fn sampled_requests_draw_the_same_tokens_in_every_stage() {
    // Per-request seeds: a request's draws never depend on what else is in the batch.
    let model = tiny();
    let requests: Vec<Request> = workload(10)
        .into_iter()
        .map(|r| {
            let sampling = SamplingParams { temperature: 0.9, top_k: 50, top_p: 0.95, seed: 100 + r.id };
            Request { sampling, ..r }
        })
        .collect();
    let runs = run_all(&model, &requests);
    for (name, run) in &runs[1..] {
        assert_eq!((runs[0].1.outputs.len(), run.outputs.len()), (requests.len(), requests.len()), "{name}");
        for (x, y) in runs[0].1.outputs.iter().zip(&run.outputs) {
            assert_eq!(x.tokens, y.tokens, "{name} differs from {} on sampled request {}", runs[0].0, x.id);
        }
    }
    let greedy = run_all(&model, &workload(10));
    assert_ne!(runs[0].1.outputs[0].tokens, greedy[0].1.outputs[0].tokens, "sampling should change something");
}

#[test]
fn every_stage_rejects_bad_requests_and_handles_zero_new_tokens() {
    let model = tiny();
    let max = model.config.max_position_embeddings;
    for mut engine in kvserve::stages() {
        let name = engine.name();
        let opts = RunOptions::default();
        let empty = engine.run(&model, &[Request::greedy(7, vec![], 4)], &opts);
        assert!(matches!(empty, Err(ModelError::EmptyPrompt { id: 7 })), "{name}: {empty:?}");
        let long = engine.run(&model, &[Request::greedy(8, vec![5; max + 1], 4)], &opts);
        assert!(matches!(long, Err(ModelError::PromptTooLong { id: 8, .. })), "{name}: {long:?}");
        let zero = engine.run(&model, &[Request::greedy(9, vec![5, 6], 0), Request::greedy(10, vec![5, 6], 2)], &opts);
        let zero = zero.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(zero.outputs[0].tokens.is_empty(), "{name}");
        assert_eq!(zero.outputs[0].finish, FinishReason::Length, "{name}");
        assert_eq!(zero.outputs[1].tokens.len(), 2, "{name}");
    }
}

#[test]
fn a_prompt_that_fills_the_context_stops_with_context_full() {
    let model = tiny();
    let max = model.config.max_position_embeddings;
    for mut engine in kvserve::stages() {
        let req = Request { ignore_eos: true, ..Request::greedy(0, vec![5; max - 2], 10) };
        let out = engine.run(&model, &[req], &RunOptions::default()).unwrap();
        assert_eq!(out.outputs[0].tokens.len(), 2, "{}", engine.name());
        assert_eq!(out.outputs[0].finish, FinishReason::ContextFull, "{}", engine.name());
    }
}
