//! Tensor parallelism changes where the arithmetic happens, not what it computes: for every
//! world size a shape allows, the sharded model's logits equal the unsharded model's (chapter 2's
//! engine, one request) within 1e-5 and its greedy tokens are identical.

use ch00_model::{LlamaConfig, Model};
use ch00_serving::{Engine, Request, RunOptions};
use ch02_kv_cache::KvCacheEngine;
use ch08_tensor_parallel::TensorParallel;

fn gqa(heads: usize, kv_heads: usize) -> LlamaConfig {
    LlamaConfig {
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        hidden_size: 16 * heads,
        head_dim: 16,
        intermediate_size: 90, // not a multiple of 4 or 8: uneven MLP slices
        vocab_size: 301,       // nor is the vocabulary
        ..LlamaConfig::named("tiny").unwrap()
    }
}

fn check(config: LlamaConfig, worlds: &[usize], seed: u64) {
    let model = Model::random(config, seed).unwrap();
    let prompt: Vec<u32> = (0..11).map(|i| (i * 37 + 5) % model.config.vocab_size as u32).collect();
    let max_new = 24;
    let opts = RunOptions { record_logits: true, ..Default::default() };
    let request = Request { ignore_eos: true, ..Request::greedy(0, prompt.clone(), max_new) };
    let whole = KvCacheEngine::default().run(&model, &[request], &opts).unwrap();
    assert_eq!(whole.outputs.len(), 1);
    let want = &whole.outputs[0];
    for &world in worlds {
        let got = TensorParallel { world }.generate(&model, &prompt, max_new).unwrap();
        assert_eq!(got.tokens, want.tokens, "world {world}: greedy tokens");
        assert_eq!(got.logits.len(), want.logits.len());
        for (step, (a, b)) in got.logits.iter().zip(&want.logits).enumerate() {
            assert_eq!(a.len(), b.len());
            let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0f32, f32::max);
            assert!(worst <= 1e-5, "world {world}, step {step}: logits differ by {worst}");
        }
        assert_eq!(got.weight_bytes.len(), world);
    }
}

#[test]
fn the_shipped_tiny_shape_on_1_2_and_4_ranks() {
    check(LlamaConfig::named("tiny").unwrap(), &[1, 2, 4], 1);
}

#[test]
fn gqa_8_over_2_on_1_2_4_and_8_ranks_replicating_kv_heads_past_two() {
    check(gqa(8, 2), &[1, 2, 4, 8], 2);
}

#[test]
fn mha_and_mqa_shapes() {
    check(gqa(4, 4), &[2, 4], 3);
    check(gqa(4, 1), &[2, 4], 4);
}

#[test]
fn each_rank_holds_its_share_of_weights_and_kv() {
    let model = Model::random(gqa(8, 4), 5).unwrap();
    let one = TensorParallel { world: 1 }.generate(&model, &[1, 2, 3], 2).unwrap();
    let four = TensorParallel { world: 4 }.generate(&model, &[1, 2, 3], 2).unwrap();
    // K/V split four ways exactly (4 K/V heads); the weights nearly (norms are replicated).
    assert_eq!(four.kv_bytes.iter().sum::<u64>(), one.kv_bytes[0]);
    assert!(four.kv_bytes.iter().all(|&b| b == one.kv_bytes[0] / 4));
    assert_eq!(four.weight_bytes.iter().sum::<u64>(), one.weight_bytes[0]);
}

#[test]
fn world_sizes_that_cannot_split_the_heads_are_refused() {
    let model = Model::random(gqa(8, 2), 6).unwrap();
    let err = TensorParallel { world: 3 }.generate(&model, &[1, 2], 2).unwrap_err();
    assert!(err.to_string().contains("cannot split"), "{err}");
}
