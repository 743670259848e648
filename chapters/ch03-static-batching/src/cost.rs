//! What one decode step costs as the batch grows: B equal requests decoded together.

use crate::StaticBatchEngine;
use ch00_model::{Model, Result};
use ch00_serving::{Engine, LengthDist, RunOptions, WorkloadSpec};

// ANCHOR: step_cost
/// Median milliseconds of a decode step with `batch` rows: `batch` requests of a 16-token prompt
/// and 17 new tokens, one static batch, so every request sees the same 16 decode steps and one
/// request's inter-token gaps are the step times.
pub fn decode_step_ms(model: &Model, batch: usize) -> Result<f64> {
    let spec = WorkloadSpec {
        prompt_len: LengthDist::Fixed(16),
        output_len: LengthDist::Fixed(17),
        ..WorkloadSpec::exponential_default(batch, 0)
    };
    let requests = spec.generate(model.config.vocab_size);
    let mut engine = StaticBatchEngine { batch_size: batch, max_len: Some(64) };
    let out = engine.run(model, &requests, &RunOptions::default())?;
    let mut steps = out.outputs.first().map(|o| o.token_latencies_s.clone()).unwrap_or_default();
    steps.sort_by(f64::total_cmp);
    Ok(steps.get(steps.len() / 2).copied().unwrap_or(0.0) * 1e3)
}
// ANCHOR_END: step_cost
