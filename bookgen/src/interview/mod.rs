//! The numbers of the book's interview pages (the cheat sheet and the mock system-design interview),
//! computed with the project's own calculators: `kv_bytes_per_token` and `MemoryPlan` (chapter 0),
//! `blocks_for_budget` (chapter 5) and the capacity accounting run that drives chapter 4's and
//! chapter 5's schedulers. Nothing here is measured, so the output is the same on every machine;
//! `tests/interview.rs` checks that the files in `book/src/generated` are what this code writes.
//! The command is `examples/interview.rs`.
//!
//! `inputs` holds the questions' inputs, `sizing` computes what a card and a layout hold,
//! `markdown` writes the pages' tables.

pub mod compute;
pub mod inputs;
pub mod markdown;
pub mod sizing;

pub use inputs::Inputs;
pub use markdown::files;
