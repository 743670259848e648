//! Slot accounting for batching engines: who held which slot in every step, how many slot-steps
//! did useful work and how many were wasted, the KV bytes in use, and (optionally) the trace.

use crate::step::Row;
use ch00_serving::{Phase, RequestOutput, RunOutput, RunStats, Sequence, TraceEntry, TraceStep};
use ch02_kv_cache::ContiguousBackend;

/// Accumulates [`RunStats`] and the trace of a run over `num_slots` slots.
#[derive(Debug)]
pub struct Recorder {
    num_slots: usize,
    kv_bytes_allocated: u64,
    steps: usize,
    /// Token rows computed (padding included).
    rows: u64,
    /// Slot-steps that fed a token (prefill or decode).
    busy: u64,
    /// Slot-steps computed for a request that had already finished (padding).
    wasted: u64,
    peak_running: usize,
    peak_kv_used: u64,
    trace: Option<Vec<TraceStep>>,
}

impl Recorder {
    /// `kv_bytes_allocated` is what the engine reserved up front (all slots, full length).
    pub fn new(num_slots: usize, kv_bytes_allocated: u64, trace: bool) -> Self {
        Recorder {
            num_slots,
            kv_bytes_allocated,
            steps: 0,
            rows: 0,
            busy: 0,
            wasted: 0,
            peak_running: 0,
            peak_kv_used: 0,
            trace: trace.then(Vec::new),
        }
    }

    // ANCHOR: record
    /// Books one step: `fed[i]` is the number of tokens `rows[i]` fed, `t_s` when the step ended.
    pub fn record(&mut self, rows: &[Row], fed: &[usize], seqs: &[Sequence], backend: &ContiguousBackend, t_s: f64) {
        let running = rows.iter().filter(|r| r.phase != Phase::Padding).count();
        self.steps += 1;
        self.rows += fed.iter().sum::<usize>() as u64;
        self.busy += running as u64;
        self.wasted += (rows.len() - running) as u64; // padding rows: computed, output thrown away
        self.peak_running = self.peak_running.max(running);
        // Every row, padding or not, still holds its tokens' K and V.
        let kv_used = rows.iter().map(|r| backend.slots.get(r.slot).map_or(0, |c| c.bytes_used())).sum();
        self.peak_kv_used = self.peak_kv_used.max(kv_used);
        if let Some(trace) = &mut self.trace {
            let entries = rows
                .iter()
                .zip(fed)
                .map(|(r, &tokens)| TraceEntry { slot: r.slot, request: seqs[r.seq].id, phase: r.phase, tokens })
                .collect();
            let (step, kv_bytes_allocated) = (self.steps - 1, self.kv_bytes_allocated);
            trace.push(TraceStep { step, t_s, entries, kv_bytes_allocated, kv_bytes_used: kv_used });
        }
    }
    // ANCHOR_END: record

    /// The run's output: every sequence's output (in the order given) and the stats.
    pub fn finish(self, outputs: Vec<RequestOutput>, wall_s: f64) -> RunOutput {
        let steps = self.steps.max(1) as f64;
        let slot_steps = (self.steps * self.num_slots).max(1) as f64;
        let stats = RunStats {
            wall_s,
            steps: self.steps,
            token_rows: self.rows,
            mean_batch_size: self.busy as f64 / steps,
            kv_bytes_allocated: self.kv_bytes_allocated,
            kv_bytes_used: self.peak_kv_used,
            peak_running: self.peak_running,
            slot_utilisation: self.busy as f64 / slot_steps,
            wasted_slot_steps: self.wasted,
            ..RunStats::default()
        };
        RunOutput::from_outputs(outputs, stats, self.trace.unwrap_or_default())
    }
}
