//! The capacity experiment of chapter 5: the same KV memory budget and the same workload, served
//! by chapter 4 (contiguous slots reserved for the maximum length) and chapter 5 (blocks on
//! demand). Run twice: for real on the CPU with the `bench` model, and as an accounting run of a
//! 7B-shaped model on an "80 GB" H100 (the card model's budget, `crate::card`), which drives both
//! real schedulers with no model compute.
//!
//! `spec` says what runs, `run` runs it into the types of `result`, `markdown` and `figure`
//! render a result.

pub mod figure;
pub mod markdown;
pub mod result;
pub mod run;
pub mod spec;
pub mod sweep;

pub use figure::{write_capacity_figures, write_memory_figure};
pub use markdown::{claims_markdown, to_markdown};
pub use result::{BlockSizeRow, CapacityReport, CapacityRun, DesignResult, PrefixRow};
pub use run::{accounting_run, block_size_row, capacity_report, capacity_report_on, prefix_row, real_run};
pub use spec::{block_config, slot_config, AccountingSpec, CapacityOptions, RealRunSpec};
