//! Parallel sampling (`n` samples per prompt) with copy-on-write, against the same samples sent as
//! independent requests: a real CPU run (chapter 4 beside them) and accounting runs of the 7B
//! shape, one where everything fits (peak blocks = the memory the samples need) and one where
//! memory is the limit (how many samples run at once).
//!
//! `run` runs them (on the capacity experiment's specs) into the types of `result`; `markdown`
//! renders a report.

pub mod markdown;
pub mod result;
pub mod run;

pub use markdown::to_markdown;
pub use result::{SamplingDesign, SamplingReport, SamplingRun};
pub use run::{accounting_run, real_run, real_spec, sampled, sampling_report, SAMPLES};
