//! Reference answers for chapter 3 (compiled instead of `src/ch03.rs` with `--features solutions`).

use crate::types::{ExerciseError, Result, SlotSteps};

pub fn static_batching(output_lens: &[usize], batch_size: usize) -> Result<SlotSteps> {
    if batch_size == 0 {
        return Err(ExerciseError::InvalidSettings("batch size must be at least 1".into()));
    }
    let lens: Vec<usize> = output_lens.iter().copied().filter(|&n| n > 0).collect();
    let mut run = SlotSteps::default();
    for batch in lens.chunks(batch_size) {
        let longest = batch.iter().copied().max().unwrap_or(0);
        let busy: usize = batch.iter().sum();
        run.steps += longest;
        run.busy += busy;
        run.wasted += batch.len() * longest - busy;
    }
    Ok(run)
}

pub fn static_utilisation(batch_size: usize) -> Option<f64> {
    // Summed from the smallest term up, so a large B loses no precision.
    (batch_size > 0).then(|| 1.0 / (1..=batch_size).rev().map(|k| 1.0 / k as f64).sum::<f64>())
}
