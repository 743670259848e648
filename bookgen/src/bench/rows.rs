//! The figures of one run as `kvserve bench` records them (JSON): a stage's row, with its latency
//! percentiles, and a row of the workload-size comparison.

use ch00_serving::RunOutput;
use serde::Serialize;

/// One stage's figures, as the JSON report records them.
#[derive(Debug, Serialize)]
pub struct StageRow {
    pub stage: String,
    pub tokens_per_s: f64,
    pub generated_tokens: usize,
    pub wall_s: f64,
    pub steps: usize,
    /// Wall time per step.
    pub ms_per_step: f64,
    /// Token rows the model computed (prompts, recomputes, decodes, padding).
    pub token_rows: u64,
    pub mean_batch_size: f64,
    pub peak_running: usize,
    /// Time to first token: arrival to first token, per request.
    pub ttft_ms_mean: f64,
    pub ttft_ms_p50: f64,
    pub ttft_ms_p99: f64,
    /// Time per output token, per request, as vLLM's serving benchmark defines it:
    /// (time of the last token − time of the first) ÷ (tokens − 1). One value per request.
    pub tpot_ms_mean: f64,
    pub tpot_ms_p50: f64,
    pub tpot_ms_p99: f64,
    /// Inter-token latency: every gap between two consecutive tokens of a request, pooled over
    /// all requests. Its tail shows the steps that stalled decoding (a long prefill in the step).
    pub itl_ms_mean: f64,
    pub itl_ms_p50: f64,
    pub itl_ms_p99: f64,
    pub slot_utilisation: f64,
    pub wasted_slot_steps: u64,
    pub preemptions: usize,
    /// The KV pool the engine allocated.
    pub kv_bytes_allocated: u64,
    /// Peak KV bytes reserved for the running requests (slots × `max_len`, or blocks held).
    pub kv_bytes_reserved: u64,
    /// Peak KV bytes holding tokens.
    pub kv_bytes_used: u64,
}

pub fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[((p / 100.0 * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)]
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

impl StageRow {
    // ANCHOR: latency
    pub fn new(stage: &str, run: &RunOutput) -> Self {
        let ttft: Vec<f64> =
            run.outputs.iter().filter(|o| !o.tokens.is_empty()).map(|o| o.ttft_s * 1e3).collect();
        // TPOT: one value per request, its gaps' mean = (last token − first token) ÷ (tokens − 1).
        let with_gaps = run.outputs.iter().filter(|o| !o.token_latencies_s.is_empty());
        let tpot: Vec<f64> = with_gaps.map(|o| mean(&o.token_latencies_s) * 1e3).collect();
        // ITL: every gap of every request, pooled; a request with many tokens weighs more.
        let itl: Vec<f64> =
            run.outputs.iter().flat_map(|o| o.token_latencies_s.iter().map(|g| g * 1e3)).collect();
        // ANCHOR_END: latency
        let s = &run.stats;
        StageRow {
            stage: stage.to_string(),
            tokens_per_s: s.tokens_per_s,
            generated_tokens: s.generated_tokens,
            wall_s: s.wall_s,
            steps: s.steps,
            ms_per_step: 1e3 * s.wall_s / s.steps.max(1) as f64,
            token_rows: s.token_rows,
            mean_batch_size: s.mean_batch_size,
            peak_running: s.peak_running,
            ttft_ms_mean: mean(&ttft),
            ttft_ms_p50: percentile(&ttft, 50.0),
            ttft_ms_p99: percentile(&ttft, 99.0),
            tpot_ms_mean: mean(&tpot),
            tpot_ms_p50: percentile(&tpot, 50.0),
            tpot_ms_p99: percentile(&tpot, 99.0),
            itl_ms_mean: mean(&itl),
            itl_ms_p50: percentile(&itl, 50.0),
            itl_ms_p99: percentile(&itl, 99.0),
            slot_utilisation: s.slot_utilisation,
            wasted_slot_steps: s.wasted_slot_steps,
            preemptions: s.preemptions,
            kv_bytes_allocated: s.kv_bytes_allocated,
            kv_bytes_reserved: s.kv_bytes_reserved,
            kv_bytes_used: s.kv_bytes_used,
        }
    }
}

/// Static against continuous batching on workloads of several sizes.
#[derive(Debug, Serialize)]
pub struct SizeRow {
    pub requests: usize,
    pub slots: usize,
    pub ch03_tokens_per_s: f64,
    pub ch04_tokens_per_s: f64,
    pub ch03_steps: usize,
    pub ch04_steps: usize,
    pub ch04_utilisation: f64,
    pub generated_tokens: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ch00_serving::{FinishReason, RequestOutput, RunStats};

    fn output(ttft_s: f64, gaps: &[f64]) -> RequestOutput {
        RequestOutput {
            id: 0,
            sample: 0,
            tokens: vec![5; gaps.len() + 1],
            finish: FinishReason::Length,
            ttft_s,
            token_latencies_s: gaps.to_vec(),
            logits: Vec::new(),
        }
    }

    #[test]
    fn percentiles_come_from_the_requests_and_itl_pools_the_gaps() {
        // TTFTs 1..=100 ms; TPOT of each request is the mean of its gaps.
        let mut outputs: Vec<_> = (1..=100).map(|i| output(i as f64 / 1e3, &[0.010, 0.030])).collect();
        let run = RunOutput { outputs: outputs.clone(), stats: RunStats::default(), trace: Vec::new() };
        let row = StageRow::new("x", &run);
        assert!((row.ttft_ms_p50 - 51.0).abs() < 1e-9, "{}", row.ttft_ms_p50);
        assert!((row.ttft_ms_p99 - 99.0).abs() < 1e-9, "{}", row.ttft_ms_p99);
        assert!((row.tpot_ms_p50 - 20.0).abs() < 1e-9 && (row.tpot_ms_mean - 20.0).abs() < 1e-9);
        assert!((row.itl_ms_mean - 20.0).abs() < 1e-9 && (row.itl_ms_p99 - 30.0).abs() < 1e-9);
        // One long request: TPOT counts it once, ITL once per gap.
        outputs.truncate(1);
        outputs.push(output(0.0, &[0.1; 8]));
        let row = StageRow::new("x", &RunOutput { outputs, stats: RunStats::default(), trace: Vec::new() });
        assert!((row.tpot_ms_mean - 60.0).abs() < 1e-9, "{}", row.tpot_ms_mean);
        assert!((row.itl_ms_mean - 84.0).abs() < 1e-9, "{}", row.itl_ms_mean);
    }
}
