//! The cheat sheet's and the mock interview's tables are computed, not measured, so the files in
//! `book/src/generated` must be exactly what `bookgen::interview` writes now: a change to the
//! calculators or the schedulers that moves a number fails here until the files are regenerated
//! (`cargo run --release --example interview -- --markdown book/src/generated`).

use bookgen::interview::{files, Inputs};
use std::path::Path;

#[test]
fn generated_interview_tables_are_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("book/src/generated");
    for (name, text) in files(&Inputs::default()).unwrap() {
        let on_disk = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        assert!(
            on_disk == text,
            "book/src/generated/{name} is out of date: run `cargo run --release --example interview -- --markdown book/src/generated`"
        );
    }
}

#[test]
fn bad_inputs_are_errors() {
    for bad in [
        Inputs { users: 0, ..Inputs::default() },
        Inputs { gpu_mib: f64::NAN, ..Inputs::default() },
        Inputs { tpot_ms: 0.0, ..Inputs::default() },
        Inputs { gpu_mib: 1e300, ..Inputs::default() },
    ] {
        assert!(files(&bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_card_too_small_for_any_layout_says_so() {
    // 20 GB (19,073 MiB) cards: an 8-way group's share of the weights alone exceeds the share of
    // a card the card model gives the engine.
    let tables = files(&Inputs { gpu_mib: 19_073.0, ..Inputs::default() }).unwrap();
    let designs = &tables.iter().find(|(n, _)| *n == "mock-designs.md").unwrap().1;
    assert!(designs.contains("No layout here meets 50 ms"), "{designs}");
    let per_card = &tables.iter().find(|(n, _)| *n == "mock-per-card.md").unwrap().1;
    assert_eq!(per_card.matches("none: the weights do not fit").count(), 4, "{per_card}");
}

#[test]
fn the_compute_floor_binds_where_the_bandwidth_floor_alone_says_four_cards() {
    // Bandwidth alone fits 256 users on one 4-way fp16 group (mock-designs.md); the prompts that
    // arrive while each step runs make its FLOPs the larger floor, far past the target.
    let tables = files(&Inputs::default()).unwrap();
    let designs = &tables.iter().find(|(n, _)| *n == "mock-designs.md").unwrap().1;
    assert!(designs.contains("Fewest cards within 50 ms per token by the bandwidth floor: **4**"), "{designs}");
    let compute = &tables.iter().find(|(n, _)| *n == "mock-compute.md").unwrap().1;
    let row = compute.lines().find(|l| l.starts_with("| fp16 | 4 | in the decode steps") && l.contains("1 × 256")).unwrap();
    assert!(row.ends_with("| 4 | no |"), "{row}");
    assert!(!compute.contains("**4** (fp16"), "{compute}");
}

#[test]
fn step_floors_solve_the_prefill_that_arrives_during_the_step() {
    use bookgen::interview::compute::step_floors;
    let i = Inputs::default();
    // k = 2 × 1e12 / (1 × 1e15) s = 2 ms per token; 100 prompt tokens/s: rate × k = 0.2.
    let (bytes, compute, prompt) = step_floors(1_000_000_000_000, 0.0, 0.0, 4.0, 100.0, 1, 1000.0, &i).unwrap();
    assert_eq!(bytes, 0.0);
    assert!((compute - 10.0).abs() < 1e-9, "{compute}"); // 4 × 2 ms ÷ (1 − 0.2)
    assert!((prompt - 1.0).abs() < 1e-9, "{prompt}"); // 100 tokens/s × 10 ms
    assert!(step_floors(1_000_000_000_000, 0.0, 0.0, 4.0, 500.0, 1, 1000.0, &i).is_none()); // rate × k = 1
}
