//! A trace as Gantt bars: consecutive steps of one request in one slot and phase merged.

use ch00_serving::{Phase, TraceStep};

/// One bar: a request holding a slot in one phase over consecutive steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub slot: usize,
    pub request: u64,
    pub phase: Phase,
    pub start_s: f64,
    pub end_s: f64,
}

/// Merges consecutive steps with the same (slot, request, phase) into bars. A step runs from
/// the end of the step before it (0 for the first) to its own end.
pub fn bars(trace: &[TraceStep]) -> Vec<Bar> {
    let mut open: Vec<Bar> = Vec::new(); // bars that may still grow, one per slot at most
    let mut done = Vec::new();
    let mut start = 0.0;
    for step in trace {
        let mut still_open = Vec::new();
        for e in &step.entries {
            match open.iter().position(|r| r.slot == e.slot && r.request == e.request && r.phase == e.phase) {
                Some(i) => {
                    let mut r = open.swap_remove(i);
                    r.end_s = step.t_s;
                    still_open.push(r);
                }
                None => still_open.push(Bar {
                    slot: e.slot,
                    request: e.request,
                    phase: e.phase,
                    start_s: start,
                    end_s: step.t_s,
                }),
            }
        }
        done.append(&mut open);
        open = still_open;
        start = step.t_s;
    }
    done.append(&mut open);
    done.sort_by(|a, b| (a.slot, a.start_s).partial_cmp(&(b.slot, b.start_s)).unwrap_or(std::cmp::Ordering::Equal));
    done
}
