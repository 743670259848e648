//! One test per exercise. Without `--features solutions` they are ignored, so that
//! `cargo test --workspace` never fails on an unsolved exercise; run them on your answers with
//! `cargo test -p exercises -- --include-ignored` (an unsolved one fails with
//! `not yet implemented: chapter N (…)`).

use exercises::checks::{ch01, ch02, ch03, ch04, ch05, ch08};
use exercises::EXERCISES;

macro_rules! exercises {
    ($($chapter:ident :: $test:ident),* $(,)?) => {
        $(
            #[test]
            #[cfg_attr(
                not(feature = "solutions"),
                ignore = "exercise: `-- --include-ignored` checks your answer"
            )]
            fn $test() {
                $chapter::$test()
            }
        )*
        /// The names of the tests above, to compare with the registry.
        const TESTS: &[&str] = &[$(stringify!($test)),*];
    };
}

exercises! {
    ch01::ch01_causal_context,
    ch01::ch01_naive_token_passes,
    ch02::ch02_kv_bytes_per_token,
    ch02::ch02_cached_token_passes,
    ch02::ch02_cache_write,
    ch02::ch02_attend_one,
    ch03::ch03_static_batching,
    ch03::ch03_static_utilisation,
    ch04::ch04_slots_for_budget,
    ch04::ch04_schedule,
    ch04::ch04_continuous_batching,
    ch05::ch05_block_allocator,
    ch05::ch05_slot_mapping,
    ch05::ch05_schedule_blocks,
    ch05::ch05_prepare_write,
    ch05::ch05_chunk_shares,
    ch05::ch05_lru,
    ch08::ch08_shard_range,
    ch08::ch08_row_parallel_linear,
}

/// Runs with or without the answers: the registry covers chapters 1–5 with at least 12 exercises,
/// two to six per chapter, and every exercise has exactly one test.
#[test]
fn every_exercise_is_registered_and_tested() {
    assert!(EXERCISES.len() >= 12, "{} exercises", EXERCISES.len());
    for chapter in 1..=5u8 {
        let n = EXERCISES.iter().filter(|e| e.chapter == chapter).count();
        assert!((2..=6).contains(&n), "chapter {chapter} has {n} exercises");
    }
    let registered: Vec<String> = EXERCISES.iter().map(|e| e.test()).collect();
    assert_eq!(registered, TESTS, "the registry and the tests list different exercises");
    for e in EXERCISES {
        assert!(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(e.page).exists(), "{}", e.page);
    }
}

/// The exercise files as shipped (CI checks them with the answers built in, so it never reads a
/// reader's work): every exercise is a `todo!()` whose message names its chapter.
#[cfg(feature = "solutions")]
#[test]
fn the_shipped_exercises_are_todos_that_name_their_chapter() {
    for e in EXERCISES {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(format!("ch{:02}.rs", e.chapter));
        let src = std::fs::read_to_string(&path).unwrap();
        let todos: Vec<&str> = src.split("todo!(\"").skip(1).map(|t| t.split('"').next().unwrap_or_default()).collect();
        assert!(todos.iter().all(|t| t.starts_with(&format!("chapter {} (", e.chapter))), "{}: {todos:?}", path.display());
        // The allocator and LRU exercises are three functions each; the first is the one named.
        let function = match e.name {
            "block_allocator" => "allocate",
            "lru" => "park",
            name => name,
        };
        assert!(todos.iter().any(|t| t.ends_with(&format!(": {function}"))), "no todo!() for {} in {}", e.name, path.display());
    }
}

/// With the answers, every exercise's status is `Solved` (the path the progress binary takes).
#[cfg(feature = "solutions")]
#[test]
fn the_reference_answers_solve_every_exercise() {
    use exercises::registry::{status, Status};
    for e in EXERCISES {
        assert_eq!(status(e), Status::Solved, "{}", e.name);
    }
}
