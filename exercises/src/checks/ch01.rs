//! Checks of the chapter-1 exercises.

use crate::ch01::{causal_context, naive_token_passes};
use crate::types::ExerciseError;

pub fn ch01_causal_context() {
    // One sequence in order: token i sees tokens 0..=i.
    assert_eq!(causal_context(&[0, 0, 0], &[0, 1, 2], 2), Ok(vec![0, 1, 2]));
    assert_eq!(causal_context(&[0, 0, 0], &[0, 1, 2], 0), Ok(vec![0]));
    // Two sequences interleaved in one step: only your own sequence counts.
    let (seq, pos) = ([0, 1, 0, 1, 0], [0, 0, 1, 1, 2]);
    assert_eq!(causal_context(&seq, &pos, 3), Ok(vec![1, 3]));
    assert_eq!(causal_context(&seq, &pos, 4), Ok(vec![0, 2, 4]));
    // Out of position order in the step: the context comes back in position order.
    assert_eq!(causal_context(&[5, 5, 5, 5], &[3, 1, 0, 2], 0), Ok(vec![2, 1, 3, 0]));
    assert_eq!(causal_context(&[5, 5, 5, 5], &[3, 1, 0, 2], 3), Ok(vec![2, 1, 3]));
    // Bad input is an error, not a panic.
    assert!(matches!(causal_context(&[0, 0], &[0], 0), Err(ExerciseError::LengthMismatch { .. })));
    assert!(matches!(causal_context(&[0, 0], &[0, 1], 2), Err(ExerciseError::OutOfRange { .. })));
    assert!(matches!(causal_context(&[], &[], 0), Err(ExerciseError::OutOfRange { .. })));
}

pub fn ch01_naive_token_passes() {
    assert_eq!(naive_token_passes(16, 0), 0, "generating nothing runs no pass");
    assert_eq!(naive_token_passes(16, 1), 16, "the first token needs one pass over the prompt");
    assert_eq!(naive_token_passes(16, 2), 16 + 17);
    assert_eq!(naive_token_passes(16, 32), 32 * 16 + 32 * 31 / 2);
    assert_eq!(naive_token_passes(1, 4), 1 + 2 + 3 + 4);
    // Quadratic: a million new tokens after a million-token prompt.
    let m = 1_000_000u64;
    assert_eq!(naive_token_passes(m, m), m * m + m * (m - 1) / 2);
}
