//! Checks of the chapter-3 exercises.

use crate::ch03::{static_batching, static_utilisation};
use crate::types::{ExerciseError, SlotSteps};

fn run(steps: usize, busy: usize, wasted: usize) -> SlotSteps {
    SlotSteps { steps, busy, wasted }
}

pub fn ch03_static_batching() {
    // Chapter 3's own test: one batch of 2, 5, 3 tokens runs 5 steps; rows idle 3 + 2 steps.
    assert_eq!(static_batching(&[2, 5, 3], 4), Ok(run(5, 10, 5)));
    // The next batch waits for the whole previous one: {6, 1} then {1}.
    assert_eq!(static_batching(&[6, 1, 1], 2), Ok(run(7, 8, 5)));
    // A batch of one wastes nothing.
    assert_eq!(static_batching(&[6, 1, 1], 1), Ok(run(8, 8, 0)));
    // The last batch may be partial: its missing rows are not slots anyone held.
    assert_eq!(static_batching(&[4, 4, 4], 2), Ok(run(8, 12, 0)));
    // Requests that want nothing take no row.
    assert_eq!(static_batching(&[0, 3, 0, 3], 2), Ok(run(3, 6, 0)));
    assert_eq!(static_batching(&[], 8), Ok(SlotSteps::default()));
    assert!(matches!(static_batching(&[1], 0), Err(ExerciseError::InvalidSettings(_))));
}

pub fn ch03_static_utilisation() {
    let u = |b| static_utilisation(b).unwrap();
    assert_eq!(static_utilisation(0), None);
    assert!((u(1) - 1.0).abs() < 1e-12, "one row is always busy");
    assert!((u(2) - 2.0 / 3.0).abs() < 1e-12);
    assert!((u(4) - 12.0 / 25.0).abs() < 1e-12, "H_4 = 25/12");
    assert!((u(8) - 840.0 / 2283.0).abs() < 1e-12, "H_8 = 2283/840");
    // It keeps falling as the batch grows: H_B ≈ ln B + 0.5772 + 1/(2B).
    let b = 1_000_000usize;
    let approx = 1.0 / ((b as f64).ln() + 0.577_215_664_901_532_9 + 0.5 / b as f64);
    assert!((u(b) - approx).abs() < 1e-9, "{} vs {approx}", u(b));
}
