//! `kvserve bench`'s figures: `rows` computes a run's row (throughput, latency percentiles, the
//! work and the memory), `tables` renders rows as the Markdown tables the book quotes.

pub mod rows;
pub mod tables;

pub use rows::{percentile, SizeRow, StageRow};
pub use tables::{
    batching_table, equal_limits_table, mib, ratio_table, rows_vs_time, sizes_table, stage_table, step_cost_table,
    LATENCY_NOTE,
};
