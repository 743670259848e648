//! Figures drawn from real runs, as SVG: `bars` turns a trace into Gantt bars, `gantt` draws them
//! (cache slots over time), `latency_throughput` draws chapter 7's serving figure,
//! `budget_sweep` chapter 5's chunked-prefill trade-off.

pub mod bars;
pub mod budget_sweep;
pub mod gantt;
pub mod latency_throughput;

pub use bars::{bars, Bar};
pub use budget_sweep::budget_sweep_svg;
pub use gantt::{gantt_svg, GanttOptions};
pub use latency_throughput::{latency_throughput_svg, LoadPoint};
