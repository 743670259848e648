//! Chapter 8: tensor parallelism, taught on the CPU. The ch00 model is cut Megatron-style across
//! `world` ranks, each rank a thread with its own shard of every matrix and its own KV cache, and
//! the ranks meet in two all-reduces per layer:
//!
//! - q, k, v and gate/up are **column-parallel**: each rank computes its own heads (and its slice of
//!   the MLP's intermediate columns) from the whole input, with no communication;
//! - o_proj and down_proj are **row-parallel**: each rank multiplies its slice of the input columns,
//!   giving a partial sum of the whole output, and an all-reduce adds the partial sums;
//! - the embedding is vocab-parallel (a rank looks up the ids in its slice, zeros elsewhere, and an
//!   all-reduce fills the row) and the lm_head too (each rank scores its slice of the vocabulary; an
//!   all-gather puts the logits together for sampling);
//! - K/V heads are split with their query heads, so each rank caches only its own heads' K/V
//!   (replicated when there are more ranks than K/V heads).
//!
//! [`shard`] cuts the weights, [`comm`] is the in-process stand-in for NCCL's collectives,
//! [`rank`] is one rank's step, [`engine`] runs the ranks as threads, and [`cost`] counts the
//! bytes each rank holds and sends.

pub mod comm;
pub mod cost;
pub mod engine;
pub mod rank;
pub mod shard;

pub use comm::Group;
pub use engine::TensorParallel;
pub use shard::{Plan, RankWeights};
