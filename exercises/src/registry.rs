//! Every exercise, in book order: where it is, what it asks, and the check that marks it solved.

use crate::checks::{ch01, ch02, ch03, ch04, ch05, ch08};

/// One exercise: a function (or, for the allocator, three) whose body is `todo!()`.
#[derive(Debug, Clone, Copy)]
pub struct Exercise {
    pub chapter: u8,
    /// The function to write (and the test's name without its `chNN_` prefix).
    pub name: &'static str,
    /// The book page to read first.
    pub page: &'static str,
    /// One line: what to write.
    pub task: &'static str,
    /// Panics unless the exercise is solved.
    pub check: fn(),
}

impl Exercise {
    /// The file to edit, relative to the repository root.
    pub fn file(&self) -> String {
        format!("exercises/src/ch{:02}.rs", self.chapter)
    }

    /// The test that checks it (`cargo test -p exercises <test> -- --include-ignored`).
    pub fn test(&self) -> String {
        format!("ch{:02}_{}", self.chapter, self.name)
    }
}

const CH01: &str = "book/src/ch01-naive.md";
const CH02: &str = "book/src/ch02-kv-cache.md";
const CH03: &str = "book/src/ch03-static-batching.md";
const CH04: &str = "book/src/ch04-continuous-batching.md";
const CH05: &str = "book/src/ch05-paged-attention.md";
const CH08: &str = "book/src/ch08-tensor-parallel.md";

// ANCHOR: exercises
pub const EXERCISES: &[Exercise] = &[
    ex(1, "causal_context", CH01, ch01::ch01_causal_context,
       "which tokens of a naive step a token attends to"),
    ex(1, "naive_token_passes", CH01, ch01::ch01_naive_token_passes,
       "tokens fed through the model when every token recomputes the prefix"),
    ex(2, "kv_bytes_per_token", CH02, ch02::ch02_kv_bytes_per_token,
       "KV bytes per token, with grouped-query attention"),
    ex(2, "cached_token_passes", CH02, ch02::ch02_cached_token_passes,
       "tokens fed through the model with a KV cache"),
    ex(2, "cache_write", CH02, ch02::ch02_cache_write,
       "append one token's K and V to a contiguous cache"),
    ex(2, "attend_one", CH02, ch02::ch02_attend_one,
       "attention of one query over a cache (GQA, stable softmax)"),
    ex(3, "static_batching", CH03, ch03::ch03_static_batching,
       "steps, busy and wasted slot-steps of static batching"),
    ex(3, "static_utilisation", CH03, ch03::ch03_static_utilisation,
       "expected utilisation 1/H_B of static batching"),
    ex(4, "slots_for_budget", CH04, ch04::ch04_slots_for_budget,
       "contiguous slots that fit a KV budget"),
    ex(4, "schedule", CH04, ch04::ch04_schedule,
       "one iteration-level scheduling step"),
    ex(4, "continuous_batching", CH04, ch04::ch04_continuous_batching,
       "steps of continuous batching on chapter 3's workload"),
    ex(5, "block_allocator", CH05, ch05::ch05_block_allocator,
       "allocate, share and release blocks with reference counts"),
    ex(5, "slot_mapping", CH05, ch05::ch05_slot_mapping,
       "flat KV slots through a block table (reshape-and-cache)"),
    ex(5, "schedule_blocks", CH05, ch05::ch05_schedule_blocks,
       "admission by free blocks, with preemption of the youngest"),
    ex(5, "prepare_write", CH05, ch05::ch05_prepare_write,
       "copy-on-write of a shared block"),
    ex(5, "chunk_shares", CH05, ch05::ch05_chunk_shares,
       "chunked prefill: decodes first, then prompt chunks, under a token budget"),
    ex(5, "lru", CH05, ch05::ch05_lru,
       "the prefix cache's LRU: park, revive, evict"),
    ex(8, "shard_range", CH08, ch08::ch08_shard_range,
       "a rank's near-equal share of a dimension"),
    ex(8, "row_parallel_linear", CH08, ch08::ch08_row_parallel_linear,
       "a row-parallel linear layer: partial products, then the all-reduce"),
];

/// An [`Exercise`] row: chapter, function name, page, check, task.
const fn ex(
    chapter: u8,
    name: &'static str,
    page: &'static str,
    check: fn(),
    task: &'static str,
) -> Exercise {
    Exercise { chapter, name, page, task, check }
}
// ANCHOR_END: exercises

/// Where an exercise stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Solved,
    /// Still `todo!()` (the panic message, naming the chapter).
    Todo(String),
    /// Answered, but a check failed (its message).
    Failed(String),
}

/// Runs an exercise's check and says where it stands. A failing check panics; the caller decides
/// whether the panic is printed (the `progress` binary silences the panic hook).
pub fn status(ex: &Exercise) -> Status {
    match std::panic::catch_unwind(ex.check) {
        Ok(()) => Status::Solved,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the check panicked".into());
            if msg.starts_with("not yet implemented") {
                Status::Todo(msg)
            } else {
                Status::Failed(msg)
            }
        }
    }
}
