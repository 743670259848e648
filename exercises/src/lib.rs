//! # kvserve exercises
//!
//! The key functions of chapters 1–5 and 8, with their bodies replaced by `todo!()`. Each doc comment
//! states the task and the chapter to read; each has a check that only a correct answer passes,
//! edge cases included.
//!
//! - `cargo run -p exercises --bin progress` lists the exercises and what is solved.
//! - `cargo test -p exercises -- --include-ignored` runs every check on your answers; an unsolved
//!   one fails with `not yet implemented: chapter N (…)`. Add a name to run one:
//!   `cargo test -p exercises ch02_attend_one -- --include-ignored`.
//! - `cargo test -p exercises --features solutions` runs the checks on the reference answers in
//!   `src/solutions/` instead (CI does this), and `tests/against_chapters.rs` compares each answer
//!   with the chapter function it mirrors on random inputs, so a chapter change that an exercise no
//!   longer mirrors fails CI. Only this feature builds the chapter crates.
//!
//! Without `--include-ignored` the checks are ignored, so the workspace's `cargo test --workspace`
//! never fails on an unsolved exercise.

pub mod checks;
pub mod registry;
pub mod types;

pub use registry::{Exercise, EXERCISES};

// Your answers, or with `--features solutions` the reference answers, under the same names.
#[cfg(not(feature = "solutions"))]
pub mod ch01;
#[cfg(not(feature = "solutions"))]
pub mod ch02;
#[cfg(not(feature = "solutions"))]
pub mod ch03;
#[cfg(not(feature = "solutions"))]
pub mod ch04;
#[cfg(not(feature = "solutions"))]
pub mod ch05;
#[cfg(not(feature = "solutions"))]
pub mod ch08;

#[cfg(feature = "solutions")]
#[path = "solutions/ch01.rs"]
pub mod ch01;
#[cfg(feature = "solutions")]
#[path = "solutions/ch02.rs"]
pub mod ch02;
#[cfg(feature = "solutions")]
#[path = "solutions/ch03.rs"]
pub mod ch03;
#[cfg(feature = "solutions")]
#[path = "solutions/ch04.rs"]
pub mod ch04;
#[cfg(feature = "solutions")]
#[path = "solutions/ch05.rs"]
pub mod ch05;
#[cfg(feature = "solutions")]
#[path = "solutions/ch08.rs"]
pub mod ch08;
