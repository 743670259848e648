//! Checks of the chapter-2 exercises.

use super::assert_close;
use crate::ch02::{attend_one, cache_write, cached_token_passes, kv_bytes_per_token};
use crate::types::{AttnShape, ContiguousCache, ExerciseError, Shape};

pub fn ch02_kv_bytes_per_token() {
    assert_eq!(kv_bytes_per_token(&Shape::LLAMA_7B, 2), 512 * 1024, "Llama-2-7B in fp16: 512 KiB per token");
    assert_eq!(
        kv_bytes_per_token(&Shape::LLAMA3_8B, 2),
        128 * 1024,
        "Llama-3-8B keeps 8 KV heads for 32 query heads: only the KV heads are cached"
    );
    assert_eq!(kv_bytes_per_token(&Shape::LLAMA3_70B, 2), 320 * 1024, "Llama-3-70B in fp16");
    assert_eq!(kv_bytes_per_token(&Shape::LLAMA_7B, 4), 1024 * 1024, "f32 doubles it");
    let tiny = Shape { layers: 2, hidden: 64, heads: 4, kv_heads: 2, head_dim: 16 };
    assert_eq!(kv_bytes_per_token(&tiny, 4), 512, "the `tiny` test model in f32");
}

pub fn ch02_cached_token_passes() {
    assert_eq!(cached_token_passes(16, 0), 0, "generating nothing runs no pass");
    assert_eq!(cached_token_passes(16, 1), 16, "the prefill alone yields the first token");
    assert_eq!(cached_token_passes(16, 2), 17);
    assert_eq!(cached_token_passes(16, 128), 16 + 127);
    assert_eq!(cached_token_passes(0, 0), 0);
}

pub fn ch02_cache_write() {
    let (layers, max_len, kv_dim) = (3, 4, 2);
    let mut c = ContiguousCache::new(layers, max_len, kv_dim);
    cache_write(&mut c, 1, 2, &[1.0, 2.0], &[-1.0, -2.0]).unwrap();
    let o = (max_len + 2) * kv_dim; // layer 1, position 2
    assert_eq!(&c.k[o..o + 2], &[1.0, 2.0], "K row not at (layer * max_len + pos) * kv_dim");
    assert_eq!(&c.v[o..o + 2], &[-1.0, -2.0], "V row not at (layer * max_len + pos) * kv_dim");
    assert_eq!(c.k.iter().filter(|&&x| x != 0.0).count(), 2, "wrote outside the row");
    assert_eq!(c.len, 3, "positions 0..=2 are now valid");
    // The last position of the last layer.
    cache_write(&mut c, 2, 3, &[5.0, 6.0], &[7.0, 8.0]).unwrap();
    assert_eq!(&c.k[c.k.len() - 2..], &[5.0, 6.0]);
    assert_eq!(c.len, 4);
    // Rewriting an earlier position does not shrink the cache.
    cache_write(&mut c, 0, 0, &[9.0, 9.0], &[9.0, 9.0]).unwrap();
    assert_eq!(c.len, 4);
    assert_eq!(&c.k[0..2], &[9.0, 9.0]);
    // Errors leave the cache untouched.
    let before = c.clone();
    assert!(matches!(cache_write(&mut c, 0, 4, &[1.0, 1.0], &[1.0, 1.0]), Err(ExerciseError::OutOfRange { .. })));
    assert!(matches!(cache_write(&mut c, 3, 0, &[1.0, 1.0], &[1.0, 1.0]), Err(ExerciseError::OutOfRange { .. })));
    assert!(matches!(cache_write(&mut c, 0, 1, &[1.0], &[1.0, 1.0]), Err(ExerciseError::LengthMismatch { .. })));
    assert!(matches!(cache_write(&mut c, 0, 1, &[1.0, 1.0], &[1.0; 3]), Err(ExerciseError::LengthMismatch { .. })));
    assert_eq!(c, before, "a failed write changed the cache");
}

pub fn ch02_attend_one() {
    // One context token: every head returns its KV head's value; query heads 0, 1 share KV head 0.
    let gqa = AttnShape { heads: 4, kv_heads: 2, head_dim: 2 };
    let out = attend_one(gqa, &[1.0; 8], &[0.5; 4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert_eq!(out, vec![1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0], "query head h reads KV head h / (heads / kv_heads)");

    // Scaling by 1/sqrt(head_dim): scores 0 and ln 3 give weights 1/4 and 3/4.
    let one = AttnShape { heads: 1, kv_heads: 1, head_dim: 4 };
    let c = 3f32.ln() / 2.0; // q·k = 4c, / sqrt(4) = 2c = ln 3
    let keys = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
    let values = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
    let out = attend_one(one, &[c; 4], &keys, &values).unwrap();
    assert_close(&out, &[0.25, 0.75, 0.0, 0.0], 1e-5, "softmax(q·k / sqrt(head_dim))");

    // Huge logits: subtract the maximum before exp.
    let big = AttnShape { heads: 1, kv_heads: 1, head_dim: 1 };
    let out = attend_one(big, &[100.0], &[100.0, 99.0, -100.0], &[1.0, 2.0, 3.0]).unwrap();
    let w = (-100f32).exp(); // weight of the second key relative to the first
    assert_close(&out, &[(1.0 + 2.0 * w) / (1.0 + w)], 1e-5, "logits of 10,000 must not overflow");

    // Order of heads in the output, with different queries per head.
    let two = AttnShape { heads: 2, kv_heads: 1, head_dim: 1 };
    let out = attend_one(two, &[10.0, -10.0], &[1.0, -1.0], &[5.0, 7.0]).unwrap();
    assert!(out[0] < 5.01 && out[1] > 6.99, "head 0 prefers key 0, head 1 key 1: {out:?}");

    // Bad input.
    let e = |r: Result<Vec<f32>, ExerciseError>| r.unwrap_err();
    assert!(matches!(e(attend_one(AttnShape { heads: 3, kv_heads: 2, head_dim: 2 }, &[0.0; 6], &[0.0; 4], &[0.0; 4])), ExerciseError::InvalidSettings(_)));
    assert!(matches!(e(attend_one(AttnShape { heads: 2, kv_heads: 0, head_dim: 2 }, &[0.0; 4], &[], &[])), ExerciseError::InvalidSettings(_)));
    assert!(matches!(e(attend_one(gqa, &[0.0; 7], &[0.0; 4], &[0.0; 4])), ExerciseError::LengthMismatch { .. }));
    assert!(matches!(e(attend_one(gqa, &[0.0; 8], &[0.0; 5], &[0.0; 5])), ExerciseError::LengthMismatch { .. }));
    assert!(matches!(e(attend_one(gqa, &[0.0; 8], &[0.0; 4], &[0.0; 8])), ExerciseError::LengthMismatch { .. }));
    assert!(matches!(e(attend_one(gqa, &[0.0; 8], &[], &[])), ExerciseError::InvalidSettings(_)));
}
