//! Run statistics as an observer of steps: [`crate::drive`] hands every [`StepOutput`] to a
//! [`RunRecorder`], which keeps running sums (and the per-step trace only when asked), so the
//! engines themselves keep nothing per step.

use crate::serving::{Phase, RequestOutput, RunOutput, RunStats, TraceStep};
use crate::stepwise::{EngineLoad, StepOutput};

// ANCHOR: recorder
/// Accumulates [`RunStats`] (and, when tracing, one [`TraceStep`] per step) from step outputs.
#[derive(Debug)]
pub struct RunRecorder {
    kv_bytes_total: u64,
    kv_units_total: usize,
    steps: usize,
    token_rows: u64,
    /// Rows that fed a live sequence, and rows computed as padding (static batching's waste).
    busy: u64,
    wasted: u64,
    /// Sum over steps of the slots busy or blocks in use.
    units: u64,
    peak_running: usize,
    peak_kv_used: u64,
    /// Most slots or blocks reserved in one step.
    peak_units: usize,
    preemptions: usize,
    trace: Option<Vec<TraceStep>>,
}

impl RunRecorder {
    /// `load`: the engine before its first step (for the cache's size).
    pub fn new(load: EngineLoad, trace: bool) -> Self {
        RunRecorder {
            kv_bytes_total: load.kv_bytes_total,
            kv_units_total: load.kv_units_total,
            steps: 0,
            token_rows: 0,
            busy: 0,
            wasted: 0,
            units: 0,
            peak_running: 0,
            peak_kv_used: 0,
            peak_units: 0,
            preemptions: 0,
            trace: trace.then(Vec::new),
        }
    }

    /// Books one step that ended at `t_s`.
    pub fn observe(&mut self, step: &StepOutput, t_s: f64) {
        self.preemptions += step.preempted.len();
        let Some(r) = &step.ran else { return };
        let running = r.rows.iter().filter(|e| e.phase != Phase::Padding).count();
        self.steps += 1;
        self.token_rows += r.rows.iter().map(|e| e.tokens as u64).sum::<u64>();
        self.busy += running as u64;
        self.wasted += (r.rows.len() - running) as u64; // padding rows: computed, output thrown away
        self.units += r.kv_units_used as u64;
        self.peak_running = self.peak_running.max(running);
        self.peak_kv_used = self.peak_kv_used.max(r.kv_bytes_used);
        self.peak_units = self.peak_units.max(r.kv_units_reserved);
        if let Some(trace) = &mut self.trace {
            trace.push(TraceStep {
                step: self.steps - 1,
                t_s,
                entries: r.rows.clone(),
                kv_bytes_allocated: r.kv_bytes_allocated,
                kv_bytes_used: r.kv_bytes_used,
                preempted: step.preempted.clone(),
            });
        }
    }

    /// The run's output: every sequence's output (in the order given) and the stats.
    pub fn finish(self, outputs: Vec<RequestOutput>, wall_s: f64) -> RunOutput {
        let steps = self.steps.max(1) as f64;
        let stats = RunStats {
            wall_s,
            steps: self.steps,
            token_rows: self.token_rows,
            mean_batch_size: self.busy as f64 / steps,
            kv_bytes_allocated: self.kv_bytes_total,
            // A unit (slot or block) is the pool's bytes over its units.
            kv_bytes_reserved: self.peak_units as u64 * self.kv_bytes_total
                / self.kv_units_total.max(1) as u64,
            kv_bytes_used: self.peak_kv_used,
            peak_running: self.peak_running,
            // Slots: busy slot-steps / all slot-steps. Blocks: the pool's share in use, per step.
            slot_utilisation: self.units as f64 / (steps * self.kv_units_total.max(1) as f64),
            wasted_slot_steps: self.wasted,
            preemptions: self.preemptions,
            ..RunStats::default()
        };
        RunOutput::from_outputs(outputs, stats, self.trace.unwrap_or_default())
    }
}
// ANCHOR_END: recorder
