//! Chapter 8 — tensor parallelism (`book/src/ch08-tensor-parallel.md`,
//! `chapters/ch08-tensor-parallel/src/`).
//!
//! Replace each `todo!()` with your answer, then `cargo test -p exercises ch08 -- --include-ignored`.
#![allow(unused_variables)] // the todo!() bodies use nothing yet

use std::ops::Range;

/// **Chapter 8 — the rank's share.** The `rank`-th of `world` near-equal, contiguous parts of
/// `0..n`, in order, covering it exactly: rank r gets `r·n/W .. (r+1)·n/W` (integer division), so
/// the parts differ in length by at most one when `world` does not divide `n`.
pub fn shard_range(n: usize, rank: usize, world: usize) -> Range<usize> {
    todo!("chapter 8 (book/src/ch08-tensor-parallel.md): shard_range")
}

/// **Chapter 8 — a row-parallel linear layer on `world` ranks.**
///
/// `x` is (n, k) and `w` is (m, k), both row-major (`w` in Hugging Face's layout, out × in);
/// the layer is `y = x · wᵀ`, (n, m). Split the input dimension k with [`shard_range`]: rank r
/// holds columns `shard_range(k, r, world)` of both `x` and `w`, and computes the partial product
/// of those columns only, an (n, m) matrix. Return the all-reduce of the partials: their sum,
/// added in rank order (rank 0's partial, plus rank 1's, ...). It equals `x · wᵀ` up to f32
/// rounding — o_proj and down_proj run this way in chapter 8.
pub fn row_parallel_linear(x: &[f32], w: &[f32], n: usize, k: usize, m: usize, world: usize) -> Vec<f32> {
    todo!("chapter 8 (book/src/ch08-tensor-parallel.md): row_parallel_linear")
}
