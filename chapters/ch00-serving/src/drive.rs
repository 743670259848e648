//! The offline run of a step-wise engine: the whole workload added, then `step` until nothing is
//! left, with a [`RunRecorder`] watching every step.

use crate::recorder::RunRecorder;
use crate::serving::{Request, RunOptions, RunOutput};
use crate::stepwise::StepEngine;
use ch00_model::Result;

// ANCHOR: drive
/// The offline run as a loop over `step`: adds `requests` (arrival times on the engine's clock),
/// steps until all have finished, and returns every sequence's output in the order added, with
/// the run's statistics (and trace, when `opts.trace`) observed from the steps.
pub fn drive(engine: &mut dyn StepEngine, requests: &[Request], opts: &RunOptions) -> Result<RunOutput> {
    for r in requests {
        engine.add_request(r)?;
    }
    let mut rec = RunRecorder::new(engine.load(), opts.trace);
    let mut outputs = Vec::new();
    while engine.has_unfinished() {
        let step = engine.step()?;
        rec.observe(&step, engine.now_s());
        outputs.extend(step.finished);
        if step.ran.is_none() {
            // Nobody has arrived yet: an idle server waits for work.
            if let Some(t) = engine.next_arrival() {
                if let Ok(wait) = std::time::Duration::try_from_secs_f64(t - engine.now_s()) {
                    std::thread::sleep(wait);
                }
            }
        }
    }
    outputs.sort_by_key(|(seq, _)| *seq);
    Ok(rec.finish(outputs.into_iter().map(|(_, o)| o).collect(), engine.now_s()))
}
// ANCHOR_END: drive
