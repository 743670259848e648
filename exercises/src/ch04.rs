//! Chapter 4 — continuous batching (`book/src/ch04-continuous-batching.md`,
//! `chapters/ch04-continuous-batching/src/`).
//!
//! Replace each `todo!()` with your answer, then `cargo test -p exercises ch04 -- --include-ignored`.
#![allow(unused_variables)]

use crate::types::{Result, SlotScheduler, SlotSteps, StepPlan};

/// **Chapter 4 — from a KV budget to cache slots.**
///
/// Every slot is reserved for `max_len` tokens of `bytes_per_token` bytes each. Return how many
/// whole slots fit in `budget_bytes`.
///
/// Errors: `max_len` or `bytes_per_token` is 0 (`InvalidSettings`); not even one slot fits —
/// including a slot so large that its size does not fit in a `u64` (`BudgetTooSmall`). Never
/// panics.
pub fn slots_for_budget(bytes_per_token: u64, max_len: u64, budget_bytes: u64) -> Result<u64> {
    todo!("chapter 4 (book/src/ch04-continuous-batching.md): slots_for_budget")
}

/// **Chapter 4 — one iteration-level scheduling step.**
///
/// Plan the next step at time `now_s`, as chapter 4's `Scheduler::schedule`: every running request
/// decodes one token (in `s.running`'s order); then waiting requests are admitted from the front of
/// `s.waiting` while the front one has arrived (`arrival_s <= now_s`), fewer than `max_running`
/// requests run, a slot is free (take the lowest) and its prefill fits what is left of
/// `max_tokens_per_step` after the decodes. First come, first served: a request that does not fit
/// blocks everyone behind it. Admitted requests move to `s.running`; they do not also decode in
/// this step.
pub fn schedule(s: &mut SlotScheduler, now_s: f64) -> StepPlan {
    todo!("chapter 4 (book/src/ch04-continuous-batching.md): schedule")
}

/// **Chapter 4 — how many steps continuous batching needs.**
///
/// The same workload as chapter 3's `static_batching` (all requests at time 0, `output_lens[i]` new
/// tokens each, served in order), on `slots` cache slots with iteration-level scheduling: at the
/// start of every step, waiting requests fill the free slots (lowest index first) and are
/// prefilled, which yields their first token; running requests decode one token each; a request
/// that has all its tokens leaves, and its slot is refilled at the very next step. Requests that
/// want no token take no slot. Return the steps, busy slot-steps and wasted slot-steps.
///
/// Errors: `slots` is 0 (`InvalidSettings`).
pub fn continuous_batching(output_lens: &[usize], slots: usize) -> Result<SlotSteps> {
    todo!("chapter 4 (book/src/ch04-continuous-batching.md): continuous_batching")
}
