//! The serving core every batching chapter shares, between the model (ch00-model) and the
//! chapters' schedulers: what a request is, what a sequence in flight holds, how an engine is
//! driven step by step, and what a run reports.
//!
//! - [`serving`]: requests, their outputs, the `Engine` trait, run options and statistics, and
//!   `Sequence`, the per-sample bookkeeping (tokens, sampler, timings).
//! - [`stepwise`]: the `StepEngine` trait a server drives, and [`drive`], the offline run as a
//!   loop over its steps.
//! - [`step`]: one batched forward pass over a step's spans.
//! - [`workload`]: the synthetic workloads the benches and the book run.
//! - [`generate`]: one prompt in, text out, on any engine (the CLI and the examples).

pub mod generate;
pub mod serving;
pub mod step;
pub mod stepwise;
pub mod workload;

pub use serving::{
    resolve_max_len, sequences, split_samples, validate_request, Clock, Engine, FinishReason, Phase, Request, RequestOutput,
    RunOptions, RunOutput, RunStats, Sequence, TraceEntry, TraceStep, MAX_SAMPLES,
};
pub use step::{run_spans, Span};
pub use stepwise::{drive, EngineLoad, NewToken, StepEngine, StepOutput};
pub use workload::{Arrivals, LengthDist, WorkloadSpec};
