//! The step-wise engine: how a server drives an engine, one scheduling iteration at a time, as
//! vLLM's engine core is driven. Requests are added while others run; every `step` returns the
//! token each running sequence just produced and the sequences that finished; a request whose
//! client went away is aborted. The offline [`crate::Engine::run`] of a batching engine is
//! [`drive`]: add the whole workload, then step until nothing is left.

use ch00_model::Result;
use crate::serving::{Request, RequestOutput, TraceEntry};
use crate::table::SeqId;

// ANCHOR: step_output
/// A token one sequence produced in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewToken {
    pub id: u64,
    /// Which of the request's `n` samples produced it.
    pub sample: usize,
    pub token: u32,
}

/// What one step did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutput {
    /// One entry per sequence that produced a token (a finished sequence's last token included).
    pub tokens: Vec<NewToken>,
    /// Sequences that finished this step (or had nothing to generate), with everything they
    /// produced; they have left the engine's table.
    pub finished: Vec<(SeqId, RequestOutput)>,
    /// Requests of the sequences preempted this step (evicted, to be recomputed later).
    pub preempted: Vec<u64>,
    /// What the forward pass computed and held; `None` when the model did not run (nothing had
    /// arrived yet, or nothing was left).
    pub ran: Option<StepRecord>,
}

/// One forward pass as an observer sees it: [`drive`]'s statistics and traces are built from
/// these, so the engine itself keeps nothing per step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepRecord {
    /// Every row of the pass: each sequence's part (slot, request, phase, tokens fed).
    pub rows: Vec<TraceEntry>,
    /// KV bytes set aside (all slots, or the blocks in use) and holding real tokens.
    pub kv_bytes_allocated: u64,
    pub kv_bytes_used: u64,
    /// Slots busy (contiguous engines) or blocks in use (paged engines), of `EngineLoad::kv_units_total`.
    pub kv_units_used: usize,
    /// Slots or blocks the step's sequences hold, busy or not: a static batch keeps its finished
    /// rows' slots until the batch ends.
    pub kv_units_reserved: usize,
}
// ANCHOR_END: step_output

/// What the engine holds right now (for `/metrics` and backpressure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EngineLoad {
    /// Sequences in the running batch.
    pub running: usize,
    /// Sequences queued for admission (preempted ones included).
    pub waiting: usize,
    /// KV blocks (paged engines) or slots (contiguous engines) in use, and how many there are.
    pub kv_units_used: usize,
    pub kv_units_total: usize,
    /// Bytes of KV memory the engine holds for its cache (all slots, or the whole pool).
    pub kv_bytes_total: u64,
    /// Preemptions since the engine started.
    pub preemptions: usize,
    /// Prefix cache since the engine started (paged engines; 0 elsewhere): tokens looked up at
    /// admission and those found cached, and cached blocks evicted to make room.
    pub prefix_query_tokens: u64,
    pub prefix_hit_tokens: u64,
    pub prefix_evicted_blocks: u64,
}

// ANCHOR: step_engine
/// An engine driven step by step.
pub trait StepEngine {
    /// Seconds on the engine's clock; a request arriving now has `arrival_s = now_s()`.
    fn now_s(&self) -> f64;
    /// Queues a request (all its samples). A bad request is an error and changes nothing.
    fn add_request(&mut self, req: &Request) -> Result<()>;
    /// One scheduling iteration and one forward pass over everyone scheduled.
    fn step(&mut self) -> Result<StepOutput>;
    /// Drops every sequence of request `id`, running or waiting; its KV memory is free at once.
    /// Returns whether there was anything to drop.
    fn abort(&mut self, id: u64) -> Result<bool>;
    /// Anything running or waiting.
    fn has_unfinished(&self) -> bool;
    /// When the earliest waiting request arrives (offline workloads arrive in the future).
    fn next_arrival(&self) -> Option<f64>;
    fn load(&self) -> EngineLoad;
    /// Longest sequence (prompt + generated) the engine accepts.
    fn max_len(&self) -> usize;
}
// ANCHOR_END: step_engine
