//! Reference answers for chapter 1 (compiled instead of `src/ch01.rs` with `--features solutions`).

use crate::types::{ExerciseError, Result};

pub fn causal_context(seq: &[usize], pos: &[usize], i: usize) -> Result<Vec<usize>> {
    if seq.len() != pos.len() {
        return Err(ExerciseError::LengthMismatch { what: "pos", expected: seq.len(), got: pos.len() });
    }
    if i >= seq.len() {
        return Err(ExerciseError::OutOfRange { what: "token", index: i, len: seq.len() });
    }
    let mut ctx: Vec<usize> = (0..seq.len()).filter(|&j| seq[j] == seq[i] && pos[j] <= pos[i]).collect();
    ctx.sort_by_key(|&j| pos[j]);
    Ok(ctx)
}

pub fn naive_token_passes(prompt_len: u64, new_tokens: u64) -> u64 {
    // Passes feed p, p + 1, …, p + n − 1 tokens.
    new_tokens * prompt_len + new_tokens * new_tokens.saturating_sub(1) / 2
}
