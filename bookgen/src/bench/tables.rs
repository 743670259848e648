//! The rows of `kvserve bench` as the Markdown tables it prints and the book quotes.

use crate::bench::rows::{SizeRow, StageRow};
use ch00_serving::RunOutput;
use std::fmt::Write;

pub fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64)
}

// ANCHOR: stage_table
/// The tour's table: each stage's runs of the same workload (one per round), throughput as the
/// median round with its spread, its ratio to the previous stage, the work (steps, token rows)
/// and what it cost, and the KV memory each stage reserved beside the memory holding tokens.
pub fn stage_table(rows: &[(&str, Vec<RunOutput>)]) -> String {
    let rounds = rows.iter().map(|(_, runs)| runs.len()).max().unwrap_or(0);
    let mut t = String::from("| stage | tokens/s | × previous | steps | token rows | ms / step | µs / token row | KV reserved¹ | KV used¹ | used ÷ reserved |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut prev: Option<Spread> = None;
    let mut any_noise = false;
    for (name, runs) in rows {
        let Some(spread) = Spread::of(runs) else { continue };
        let s = &runs[spread.median_run].stats; // the other columns from the median round
        let tps = if runs.len() > 1 {
            format!("{:.0} ({:.0}–{:.0})", spread.median, spread.min, spread.max)
        } else {
            format!("{:.1}", spread.median)
        };
        let ratio = match &prev {
            None => "—".to_string(),
            Some(p) if runs.len() > 1 && spread.overlaps(p) => {
                any_noise = true;
                format!("{:.1}× ≈", spread.median / p.median)
            }
            Some(p) => format!("{:.1}×", spread.median / p.median),
        };
        let used = if s.kv_bytes_reserved > 0 {
            format!("{:.1}%", 100.0 * s.kv_bytes_used as f64 / s.kv_bytes_reserved as f64)
        } else {
            "—".into()
        };
        let per_step = 1e3 * s.wall_s / s.steps.max(1) as f64;
        let per_row = 1e6 * s.wall_s / s.token_rows.max(1) as f64;
        let (reserved, bytes) = (mib(s.kv_bytes_reserved), mib(s.kv_bytes_used));
        let (steps, token_rows) = (s.steps, s.token_rows);
        let _ = writeln!(t, "| {name} | {tps} | {ratio} | {steps} | {token_rows} | {per_step:.2} | {per_row:.1} | {reserved} | {bytes} | {used} |");
        prev = Some(spread);
    }
    t.push_str(RESERVED_NOTE);
    if rounds > 1 {
        let _ = writeln!(t, "\ntokens/s: the median of {rounds} rounds (min–max), the stages run in alternating order; the other timings are the median round's.");
        if any_noise {
            t.push_str("≈: the two stages' min–max ranges overlap, so their difference is within this machine's noise.\n");
        }
    }
    t
}

/// The peak-memory columns: what a design sets aside for its running requests, and what they fill.
const RESERVED_NOTE: &str = "\n¹ Peak over the run. Reserved: a whole `max_len` slot per running request (ch02–ch04; a static batch keeps its finished rows' slots) or the blocks the running requests hold (ch05). Used: the bytes holding tokens.\n";

/// A stage's throughput over rounds: median, min, max, and which run is the median.
struct Spread {
    median: f64,
    min: f64,
    max: f64,
    median_run: usize,
}

impl Spread {
    fn of(runs: &[RunOutput]) -> Option<Spread> {
        let mut order: Vec<usize> = (0..runs.len()).collect();
        order.sort_by(|&a, &b| runs[a].stats.tokens_per_s.total_cmp(&runs[b].stats.tokens_per_s));
        let tps = |i: usize| runs[i].stats.tokens_per_s;
        let median_run = *order.get(order.len() / 2)?;
        Some(Spread { median: tps(median_run), min: tps(order[0]), max: tps(order[order.len() - 1]), median_run })
    }

    fn overlaps(&self, other: &Spread) -> bool {
        self.min <= other.max && other.min <= self.max
    }
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
    let mut t = String::from("| stage | tokens/s | × previous | steps | ms / step | token rows | TTFT p50 / p99 (s) | TPOT p50 / p99 (ms) | ITL p50 / p99 (ms) | mean batch | peak running | slot util.² | KV reserved¹ (MiB) | KV used¹ (MiB) | wasted slot-steps | preemptions |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut prev: Option<f64> = None;
    for r in rows {
        let ratio = prev.map_or("—".to_string(), |p| format!("{:.2}×", r.tokens_per_s / p));
        let util = if paged(&r.stage) { "—".to_string() } else { format!("{:.2}", r.slot_utilisation) };
        let _ = writeln!(
            t,
            "| {} | {:.1} | {ratio} | {} | {:.2} | {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2} | {} | {util} | {:.1} | {:.1} | {} | {} |",
            r.stage, r.tokens_per_s, r.steps, r.ms_per_step, r.token_rows, r.ttft_ms_p50 / 1e3, r.ttft_ms_p99 / 1e3, r.tpot_ms_p50, r.tpot_ms_p99, r.itl_ms_p50, r.itl_ms_p99, r.mean_batch_size, r.peak_running, in_mib(r.kv_bytes_reserved), in_mib(r.kv_bytes_used), r.wasted_slot_steps, r.preemptions
        );
        prev = Some(r.tokens_per_s);
    }
    t.push_str(LATENCY_NOTE);
    t.push_str(RESERVED_NOTE);
    t.push_str(UTILISATION_NOTE);
    t
}

/// Whether a stage keeps its KV cache in blocks (and so has no slots to count).
fn paged(stage: &str) -> bool {
    stage.starts_with("ch05") || stage.starts_with("ch06")
}

fn in_mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// What the latency columns mean.
pub const LATENCY_NOTE: &str = "\nTTFT: arrival to first token, per request. TPOT: per request, (last token − first token) ÷ (tokens − 1), as vLLM's serving benchmark defines it. ITL: every gap between consecutive tokens, pooled over all requests. Token rows: rows the model computed, padding and recomputation included.\n";

/// What the slot column means, and why chapter 5 has none.
const UTILISATION_NOTE: &str = "\n² Busy slot-steps ÷ (slots × steps). ch05 has no slots: what it sets aside is the blocks its requests hold, in the reserved column.\n";

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
    let mut t = String::from("| stage | max running | max tokens / step | KV pool | KV reserved¹ | KV used¹ | tokens/s | steps | ms / step | peak running | TTFT p50 (s) | TPOT p50 (ms) | ITL p50 (ms) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (r, max_running, max_tokens) in rows {
        let _ = writeln!(
            t,
            "| {} | {max_running} | {max_tokens} | {} | {} | {} | {:.1} | {} | {:.2} | {} | {:.1} | {:.1} | {:.1} |",
            r.stage,
            mib(r.kv_bytes_allocated),
            mib(r.kv_bytes_reserved),
            mib(r.kv_bytes_used),
            r.tokens_per_s,
            r.steps,
            r.ms_per_step,
            r.peak_running,
            r.ttft_ms_p50 / 1e3,
            r.tpot_ms_p50,
            r.itl_ms_p50
        );
    }
    t.push_str(RESERVED_NOTE);
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

#[cfg(test)]
mod tests {
    use super::*;
    use ch00_serving::RunStats;

    fn run(tokens_per_s: f64, reserved: u64, used: u64) -> RunOutput {
        let stats = RunStats { tokens_per_s, steps: 10, kv_bytes_reserved: reserved, kv_bytes_used: used, ..RunStats::default() };
        RunOutput { outputs: Vec::new(), stats, trace: Vec::new() }
    }

    #[test]
    fn overlapping_rounds_are_marked_as_noise_and_distinct_ones_are_not() {
        let mib = 1u64 << 20;
        let rows = [
            ("a", vec![run(100.0, 0, 0), run(110.0, 0, 0), run(90.0, 0, 0)]),
            ("b", vec![run(105.0, 4 * mib, mib), run(95.0, 4 * mib, mib), run(120.0, 4 * mib, mib)]),
            ("c", vec![run(300.0, mib, mib / 2), run(310.0, mib, mib / 2), run(290.0, mib, mib / 2)]),
        ];
        let t = stage_table(&rows);
        let line = |name: &str| t.lines().find(|l| l.starts_with(&format!("| {name} |"))).unwrap().to_string();
        assert!(line("a").contains("| 100 (90–110) | — |"), "{t}");
        assert!(line("b").contains("| 105 (95–120) | 1.1× ≈ |"), "{t}");
        assert!(line("b").ends_with("| 4.00 MiB | 1.00 MiB | 25.0% |"), "{t}");
        assert!(line("c").contains("| 2.9× |") && !line("c").contains('≈'), "{t}");
        assert!(line("a").ends_with("| — |"), "nothing reserved, no share: {t}");
        assert!(t.contains("median of 3 rounds") && t.contains("≈: the two stages"), "{t}");
    }

    #[test]
    fn one_round_shows_no_spread() {
        let t = stage_table(&[("a", vec![run(100.0, 0, 0)]), ("b", vec![run(99.0, 0, 0)])]);
        assert!(!t.contains('≈') && !t.contains("rounds"), "{t}");
        assert!(t.contains("| 99.0 | 1.0× |"), "{t}");
    }
}
