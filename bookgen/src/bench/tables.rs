//! The rows of `kvserve bench` as the Markdown tables it prints and the book quotes.

use crate::bench::rows::{SizeRow, StageRow};
use ch00_serving::RunOutput;
use std::fmt::Write;

pub fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64)
}

// ANCHOR: stage_table
/// The tour's table: throughput and its ratio to the previous stage, the work (steps, token rows)
/// and what it cost, and the KV memory each stage held.
pub fn stage_table(rows: &[(&str, RunOutput)]) -> String {
    let mut t = String::from("| stage | tokens/s | × previous | steps | token rows | ms / step | µs / token row | KV allocated | KV used | used % |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut prev: Option<f64> = None;
    for (name, run) in rows {
        let s = &run.stats;
        let ratio = prev.map_or("—".to_string(), |p| format!("{:.1}×", s.tokens_per_s / p));
        let used_pct = if s.kv_bytes_allocated > 0 { format!("{:.1}", 100.0 * s.kv_bytes_used as f64 / s.kv_bytes_allocated as f64) } else { "—".into() };
        let per_step = 1e3 * s.wall_s / s.steps.max(1) as f64;
        let per_row = 1e6 * s.wall_s / s.token_rows.max(1) as f64;
        let _ = writeln!(t, "| {name} | {:.1} | {ratio} | {} | {} | {per_step:.2} | {per_row:.1} | {} | {} | {used_pct} |", s.tokens_per_s, s.steps, s.token_rows, mib(s.kv_bytes_allocated), mib(s.kv_bytes_used));
        prev = Some(s.tokens_per_s);
    }
    t
}
// ANCHOR_END: stage_table

/// Chapter 1 against chapter 2 in one sentence: how much more work chapter 1 did, how much longer
/// it took, and why the two differ.
pub fn rows_vs_time(naive: &RunOutput, cached: &RunOutput) -> String {
    let (a, b) = (&naive.stats, &cached.stats);
    let rows = a.token_rows as f64 / b.token_rows.max(1) as f64;
    let time = a.wall_s / b.wall_s.max(1e-9);
    let (step_a, step_b) = (1e3 * a.wall_s / a.steps.max(1) as f64, 1e3 * b.wall_s / b.steps.max(1) as f64);
    format!(
        "\nch01 computed {rows:.1}× the token rows of ch02 and took {time:.1}× as long. A ch02 step ({:.1} rows on average) took {step_b:.2} ms; a ch01 step ({:.1} rows) {step_a:.2} ms: {:.1}× the rows for {:.1}× the time. Whatever a step costs regardless of its rows is paid by both engines on every step, and the fewer rows a step has, the more of its time that is.\n",
        b.token_rows as f64 / b.steps.max(1) as f64,
        a.token_rows as f64 / a.steps.max(1) as f64,
        (a.token_rows as f64 / a.steps.max(1) as f64) / (b.token_rows as f64 / b.steps.max(1) as f64),
        step_a / step_b,
    )
}

pub fn batching_table(rows: &[StageRow]) -> String {
    let mut t = String::from("| stage | tokens/s | × previous | steps | ms / step | token rows | TTFT p50 / p99 (s) | TPOT p50 / p99 (ms) | ITL p50 / p99 (ms) | mean batch | peak running | slot / block util.¹ | wasted slot-steps | preemptions |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut prev: Option<f64> = None;
    for r in rows {
        let ratio = prev.map_or("—".to_string(), |p| format!("{:.2}×", r.tokens_per_s / p));
        let _ = writeln!(
            t,
            "| {} | {:.1} | {ratio} | {} | {:.2} | {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2} | {} | {:.2} | {} | {} |",
            r.stage, r.tokens_per_s, r.steps, r.ms_per_step, r.token_rows, r.ttft_ms_p50 / 1e3, r.ttft_ms_p99 / 1e3, r.tpot_ms_p50, r.tpot_ms_p99, r.itl_ms_p50, r.itl_ms_p99, r.mean_batch_size, r.peak_running, r.slot_utilisation, r.wasted_slot_steps, r.preemptions
        );
        prev = Some(r.tokens_per_s);
    }
    t.push_str(LATENCY_NOTE);
    t.push_str(UTILISATION_NOTE);
    t
}

/// What the latency columns mean.
pub const LATENCY_NOTE: &str = "\nTTFT: arrival to first token, per request. TPOT: per request, (last token − first token) ÷ (tokens − 1), as vLLM's serving benchmark defines it. ITL: every gap between consecutive tokens, pooled over all requests. Token rows: rows the model computed, padding and recomputation included.\n";

/// What the utilisation column means for each kind of engine.
const UTILISATION_NOTE: &str = "\n¹ ch02–ch04: busy slot-steps ÷ (slots × steps). ch05: share of the pool's blocks holding tokens, mean over steps.\n";

// ANCHOR: ratio_table
/// Continuous over static batching, taken apart: both generate the same tokens, so the
/// throughput ratio is exactly (ch03's steps ÷ ch04's) × (ch03's time per step ÷ ch04's).
pub fn ratio_table(stat: &StageRow, cont: &StageRow) -> String {
    let mut t = String::from("| | ch03 static | ch04 continuous | ch03 ÷ ch04: its factor in ch04's gain |\n|---|---:|---:|---:|\n");
    let live = |r: &StageRow| r.generated_tokens as f64 / r.steps.max(1) as f64;
    let _ = writeln!(t, "| steps | {} | {} | {:.2}× |", stat.steps, cont.steps, stat.steps as f64 / cont.steps.max(1) as f64);
    let _ = writeln!(t, "| ms per step | {:.2} | {:.2} | {:.2}× |", stat.ms_per_step, cont.ms_per_step, stat.ms_per_step / cont.ms_per_step);
    let _ = writeln!(t, "| tokens/s (ch04 ÷ ch03: the product) | {:.1} | {:.1} | **{:.2}×** |", stat.tokens_per_s, cont.tokens_per_s, cont.tokens_per_s / stat.tokens_per_s);
    let _ = writeln!(t, "| generated tokens per step (live rows) | {:.2} | {:.2} | |", live(stat), live(cont));
    let rows_per_step = |r: &StageRow| r.token_rows as f64 / r.steps.max(1) as f64;
    let _ = writeln!(t, "| token rows per step (prefill and padding included) | {:.1} | {:.1} | |", rows_per_step(stat), rows_per_step(cont));
    let _ = writeln!(t, "| slot utilisation | {:.2} | {:.2} | |", stat.slot_utilisation, cont.slot_utilisation);
    t
}
// ANCHOR_END: ratio_table

pub fn sizes_table(rows: &[SizeRow]) -> String {
    let mut t = String::from("| requests | slots | output tokens | ch03 tokens/s | ch04 tokens/s | ch04 / ch03 | ch03 steps | ch04 steps | fewest possible steps (tokens ÷ slots) | ch04 slot utilisation |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.1} | {:.1} | {:.2}× | {} | {} | {} | {:.2} |",
            r.requests,
            r.slots,
            r.generated_tokens,
            r.ch03_tokens_per_s,
            r.ch04_tokens_per_s,
            r.ch04_tokens_per_s / r.ch03_tokens_per_s,
            r.ch03_steps,
            r.ch04_steps,
            r.generated_tokens.div_ceil(r.slots),
            r.ch04_utilisation
        );
    }
    t
}

/// Chapter 5 against chapter 4 with the same limits and memory, from the batching run.
pub fn equal_limits_table(rows: &[(&StageRow, usize, usize)]) -> String {
    let mut t = String::from("| stage | max running | max tokens / step | KV memory | tokens/s | steps | ms / step | peak running | TTFT p50 (s) | TPOT p50 (ms) | ITL p50 (ms) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (r, max_running, max_tokens) in rows {
        let _ = writeln!(
            t,
            "| {} | {max_running} | {max_tokens} | {} | {:.1} | {} | {:.2} | {} | {:.1} | {:.1} | {:.1} |",
            r.stage,
            mib(r.kv_bytes_allocated),
            r.tokens_per_s,
            r.steps,
            r.ms_per_step,
            r.peak_running,
            r.ttft_ms_p50 / 1e3,
            r.tpot_ms_p50,
            r.itl_ms_p50
        );
    }
    t
}

/// Decode step cost by batch size.
pub fn step_cost_table(rows: &[(usize, f64)]) -> String {
    let mut t = String::from("| batch B | ms per step | ms per token | tokens/s |\n|--:|--:|--:|--:|\n");
    for &(b, ms) in rows {
        let _ = writeln!(t, "| {b} | {ms:.1} | {:.1} | {:.0} |", ms / b as f64, 1e3 * b as f64 / ms.max(1e-9));
    }
    t
}
