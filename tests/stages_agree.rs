//! Every stage produces exactly the tokens of the stage before it, and logits within 1e-4.

use kvserve::ch00_model::{LlamaConfig, Model, Request, RunOptions, RunOutput};

fn tiny() -> Model {
    Model::random(LlamaConfig::named("tiny").unwrap(), 0).unwrap()
}

fn prompts() -> Vec<Vec<u32>> {
    vec![vec![1, 17, 42, 99, 3], vec![1, 5], vec![1, 200, 201, 202, 203, 204, 205, 206, 207, 400, 11], vec![7]]
}

fn workload(max_new: usize) -> Vec<Request> {
    prompts().into_iter().enumerate().map(|(i, p)| Request::greedy(i as u64, p, max_new)).collect()
}

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
        for (x, y) in a.outputs.iter().zip(&b.outputs) {
            assert_eq!(x.tokens, y.tokens, "{b_name} differs from {a_name} on request {}", x.id);
            for (lx, ly) in x.logits.iter().zip(&y.logits) {
                let max_diff = lx.iter().zip(ly).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
                assert!(max_diff < 1e-4, "{b_name} vs {a_name}: logits differ by {max_diff}");
            }
        }
    }
    let tokens: Vec<Vec<u32>> = runs[0].1.outputs.iter().map(|o| o.tokens.clone()).collect();
    insta::assert_yaml_snapshot!("tiny_greedy_tokens", tokens);
}
