//! Chapter 3 — static batching (`book/src/ch03-static-batching.md`,
//! `chapters/ch03-static-batching/src/`).
//!
//! Replace each `todo!()` with your answer, then `cargo test -p exercises ch03 -- --include-ignored`.
#![allow(unused_variables)]

use crate::types::{Result, SlotSteps};

/// **Chapter 3 — static batching's slot bookkeeping.**
///
/// Requests that all arrived at time 0 want `output_lens[i]` new tokens each. They are served in
/// order, in batches of up to `batch_size`: a batch is prefilled together (that step yields every
/// row's first token), then decodes one token per row per step until its *longest* request is
/// done; only then does the next batch start. A request that wants no token is finished before it
/// starts and takes no row. Return the steps, the busy slot-steps (a row fed a token) and the
/// wasted slot-steps (a row held by a request of the batch that had already finished), as
/// chapter 3's `Recorder` counts them.
///
/// Errors: `batch_size` is 0 (`InvalidSettings`).
pub fn static_batching(output_lens: &[usize], batch_size: usize) -> Result<SlotSteps> {
    todo!("chapter 3 (book/src/ch03-static-batching.md): static_batching")
}

/// **Chapter 3 — the expected utilisation of static batching.**
///
/// With output lengths drawn from an exponential distribution, a batch of B lasts as long as the
/// longest of B draws, whose mean is the average length times the harmonic number
/// H_B = 1 + 1/2 + … + 1/B. Return the expected slot utilisation 1 / H_B, or `None` for a batch
/// of 0.
pub fn static_utilisation(batch_size: usize) -> Option<f64> {
    todo!("chapter 3 (book/src/ch03-static-batching.md): static_utilisation")
}
