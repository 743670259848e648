//! The serving core every batching chapter shares, between the model (ch00-model) and the
//! chapters' schedulers: what a request is, what a sequence in flight holds, how an engine is
//! driven step by step, and what a run reports.
//!
//! - [`serving`]: requests, their outputs, run options and statistics, and `Sequence`, the
//!   per-sample bookkeeping (tokens, sampler, timings).
//! - [`engine`](mod@engine): the `Engine` trait every stage implements.
//! - [`table`]: `SeqId` and the `SeqTable`, the one owner of every sequence in flight.
//! - [`stepwise`]: the `StepEngine` trait a server drives and what one step reports.
//! - [`recorder`]: run statistics and traces, observed from the steps.
//! - [`drive`](mod@drive): the offline run as a loop over the steps.
//! - [`step`]: one batched forward pass over a step's spans.
//! - [`workload`]: the synthetic workloads the benches and the book run.
//! - [`generate`]: one prompt in, text out, on any engine (the CLI and the examples).

pub mod drive;
pub mod engine;
pub mod generate;
pub mod recorder;
pub mod serving;
pub mod step;
pub mod stepwise;
pub mod table;
pub mod workload;

pub use engine::Engine;
pub use serving::{
    resolve_max_len, sequences, split_samples, validate_request, Clock, FinishReason, Phase, Request, RequestOutput,
    RunOptions, RunOutput, RunStats, Sequence, TraceEntry, TraceStep, MAX_SAMPLES,
};
pub use step::{run_spans, Span};
pub use drive::drive;
pub use recorder::RunRecorder;
pub use stepwise::{EngineLoad, NewToken, StepEngine, StepOutput, StepRecord};
pub use table::{SeqId, SeqTable, TokenSource};
pub use workload::{Arrivals, ChatSpec, LengthDist, WorkloadSpec};
