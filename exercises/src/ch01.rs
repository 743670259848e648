//! Chapter 1 — naive generation (`book/src/ch01-naive.md`, `chapters/ch01-naive/src/lib.rs`).
//!
//! Replace each `todo!()` with your answer, then `cargo test -p exercises ch01 -- --include-ignored`.
#![allow(unused_variables)]

use crate::types::Result;

/// **Chapter 1 — the causal context of a naive step.**
///
/// A naive step holds every token of every sequence in it: token `j` belongs to sequence `seq[j]`
/// at position `pos[j]` (a `StepMeta`). Return the indices `j` of the tokens that token `i` attends
/// to — its own sequence's tokens at positions up to and including `pos[i]` — ordered by position,
/// as chapter 1's `NoCache` backend computes them. Tokens of a sequence need not appear in position
/// order in the step.
///
/// Errors: `seq` and `pos` differ in length (`LengthMismatch`); `i` is not a token of the step
/// (`OutOfRange`).
pub fn causal_context(seq: &[usize], pos: &[usize], i: usize) -> Result<Vec<usize>> {
    todo!("chapter 1 (book/src/ch01-naive.md): causal_context")
}

/// **Chapter 1 — what recomputation costs.**
///
/// Chapter 1 generates `new_tokens` tokens after a prompt of `prompt_len` tokens by running the
/// model over the *whole* sequence so far for every new token. Return the number of token
/// positions it feeds through the model in total (the sum of the lengths of every forward pass).
/// Generating nothing costs nothing. Must not overflow for prompts and outputs of a million
/// tokens each.
pub fn naive_token_passes(prompt_len: u64, new_tokens: u64) -> u64 {
    todo!("chapter 1 (book/src/ch01-naive.md): naive_token_passes")
}
