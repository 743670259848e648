//! Chapter 2 — the KV cache (`book/src/ch02-kv-cache.md`, `book/src/appendix-memory.md`,
//! `chapters/ch02-kv-cache/src/`, `chapters/ch00-model/src/attention.rs`).
//!
//! Replace each `todo!()` with your answer, then `cargo test -p exercises ch02 -- --include-ignored`.
#![allow(unused_variables)]

use crate::types::{AttnShape, ContiguousCache, Result, Shape};

/// **Chapter 2 (appendix A) — KV bytes per token.**
///
/// Return the bytes of K and V that one token keeps in the cache across all layers of a model of
/// this `shape`, with `dtype_bytes` bytes per element (2 for fp16). Mind grouped-query attention:
/// only the key/value heads are cached.
pub fn kv_bytes_per_token(shape: &Shape, dtype_bytes: u64) -> u64 {
    todo!("chapter 2 (book/src/ch02-kv-cache.md, appendix A): kv_bytes_per_token")
}

/// **Chapter 2 — what the cache saves.**
///
/// Chapter 2 feeds the prompt once (prefill, which yields the first new token) and then only the
/// newest token per step. Return the number of token positions it feeds through the model to
/// generate `new_tokens` tokens after a `prompt_len`-token prompt. Generating nothing costs
/// nothing. Compare with chapter 1's `naive_token_passes`.
pub fn cached_token_passes(prompt_len: u64, new_tokens: u64) -> u64 {
    todo!("chapter 2 (book/src/ch02-kv-cache.md): cached_token_passes")
}

/// **Chapter 2 — appending to a contiguous cache.**
///
/// Store one token's key row `k` and value row `v` (`kv_dim` floats each) at position `pos` of
/// `layer` in `cache`, whose `k` and `v` are laid out (layers, max_len, kv_dim), row-major. Update
/// `cache.len` to the number of valid positions (rewriting an earlier position does not shrink it).
///
/// Errors, leaving the cache untouched: `layer` or `pos` beyond what the cache holds (`OutOfRange`);
/// `k` or `v` not `kv_dim` long (`LengthMismatch`).
pub fn cache_write(cache: &mut ContiguousCache, layer: usize, pos: usize, k: &[f32], v: &[f32]) -> Result<()> {
    todo!("chapter 2 (book/src/ch02-kv-cache.md): cache_write")
}

// ANCHOR: attend_one
/// **Chapter 2 (chapter 0's `attend_one`) — attention of one query over a cache.**
///
/// `q` is one token's query, (heads × head_dim); `keys` and `values` are the cached rows of its
/// context, (n_ctx, kv_heads × head_dim) each, flat. Return the attention output (heads × head_dim):
/// for each query head, softmax(q·k / √head_dim) over the context, times v. Query head `h` reads
/// key/value head `h / (heads / kv_heads)` (grouped-query attention). Logits in the thousands must
/// not turn into NaN.
///
/// Errors: `kv_heads` or `head_dim` is 0 or `heads` is not a multiple of `kv_heads`
/// (`InvalidSettings`); `q` of the wrong length, `keys` not a whole number of rows, or `values`
/// not as long as `keys` (`LengthMismatch`); an empty context (`InvalidSettings`).
pub fn attend_one(shape: AttnShape, q: &[f32], keys: &[f32], values: &[f32]) -> Result<Vec<f32>> {
    todo!("chapter 2 (book/src/ch02-kv-cache.md, chapter 0's attend_one): attend_one")
}
// ANCHOR_END: attend_one
