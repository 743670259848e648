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
    Exercise { chapter: 1, name: "causal_context", page: CH01, task: "which tokens of a naive step a token attends to", check: ch01::ch01_causal_context },
    Exercise { chapter: 1, name: "naive_token_passes", page: CH01, task: "tokens fed through the model when every token recomputes the prefix", check: ch01::ch01_naive_token_passes },
    Exercise { chapter: 2, name: "kv_bytes_per_token", page: CH02, task: "KV bytes per token, with grouped-query attention", check: ch02::ch02_kv_bytes_per_token },
    Exercise { chapter: 2, name: "cached_token_passes", page: CH02, task: "tokens fed through the model with a KV cache", check: ch02::ch02_cached_token_passes },
    Exercise { chapter: 2, name: "cache_write", page: CH02, task: "append one token's K and V to a contiguous cache", check: ch02::ch02_cache_write },
    Exercise { chapter: 2, name: "attend_one", page: CH02, task: "attention of one query over a cache (GQA, stable softmax)", check: ch02::ch02_attend_one },
    Exercise { chapter: 3, name: "static_batching", page: CH03, task: "steps, busy and wasted slot-steps of static batching", check: ch03::ch03_static_batching },
    Exercise { chapter: 3, name: "static_utilisation", page: CH03, task: "expected utilisation 1/H_B of static batching", check: ch03::ch03_static_utilisation },
    Exercise { chapter: 4, name: "slots_for_budget", page: CH04, task: "contiguous slots that fit a KV budget", check: ch04::ch04_slots_for_budget },
    Exercise { chapter: 4, name: "schedule", page: CH04, task: "one iteration-level scheduling step", check: ch04::ch04_schedule },
    Exercise { chapter: 4, name: "continuous_batching", page: CH04, task: "steps of continuous batching on chapter 3's workload", check: ch04::ch04_continuous_batching },
    Exercise { chapter: 5, name: "block_allocator", page: CH05, task: "allocate, share and release blocks with reference counts", check: ch05::ch05_block_allocator },
    Exercise { chapter: 5, name: "slot_mapping", page: CH05, task: "flat KV slots through a block table (reshape-and-cache)", check: ch05::ch05_slot_mapping },
    Exercise { chapter: 5, name: "schedule_blocks", page: CH05, task: "admission by free blocks, with preemption of the youngest", check: ch05::ch05_schedule_blocks },
    Exercise { chapter: 5, name: "prepare_write", page: CH05, task: "copy-on-write of a shared block", check: ch05::ch05_prepare_write },
    Exercise { chapter: 5, name: "chunk_shares", page: CH05, task: "chunked prefill: decodes first, then prompt chunks, under a token budget", check: ch05::ch05_chunk_shares },
    Exercise { chapter: 5, name: "lru", page: CH05, task: "the prefix cache's LRU: park, revive, evict", check: ch05::ch05_lru },
    Exercise { chapter: 8, name: "shard_range", page: CH08, task: "a rank's near-equal share of a dimension", check: ch08::ch08_shard_range },
    Exercise { chapter: 8, name: "row_parallel_linear", page: CH08, task: "a row-parallel linear layer: partial products, then the all-reduce", check: ch08::ch08_row_parallel_linear },
];
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
