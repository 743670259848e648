//! Chunked prefill, measured: long prompts arriving among running decodes, served by chapter 5's
//! engine with and without chunked prefill, and the token budget swept (the trade-off
//! Sarathi-Serve describes: a smaller budget, smoother decodes, more steps).

use crate::bench::rows::percentile;
use anyhow::{ensure, Result};
use ch00_model::{Model, SamplingParams};
use ch00_serving::{Engine, Request, RunOptions, RunOutput};
use ch05_paged_attention::{KvBudget, PagedEngine};
use serde::Serialize;

// ANCHOR: mixed
/// The mixed workload: `short` chat-sized requests decoding from time 0, and `long` long prompts
/// arriving one every `long_every_s` seconds from `first_long_s`, while the short ones decode.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MixedSpec {
    pub short: usize,
    pub short_prompt: usize,
    pub short_output: usize,
    pub long: usize,
    pub long_prompt: usize,
    pub long_output: usize,
    pub first_long_s: f64,
    pub long_every_s: f64,
}
// ANCHOR_END: mixed

impl MixedSpec {
    /// The book's run on the `bench` model (context 1024) on a 2-core CPU.
    pub fn book() -> Self {
        MixedSpec {
            short: 12,
            short_prompt: 24,
            short_output: 96,
            long: 3,
            long_prompt: 768,
            long_output: 8,
            first_long_s: 0.5,
            long_every_s: 1.5,
        }
    }

    /// The requests: the short ones first (ids `0..short`), then the long ones. Greedy, EOS
    /// ignored, prompt tokens drawn from a fixed pattern (no two prompts share a block).
    pub fn requests(&self, vocab: usize) -> Vec<Request> {
        let prompt = |id: usize, len: usize| (0..len).map(|i| (3 + (id * 7919 + i * 104_729) % (vocab - 3)) as u32).collect();
        let req = |id: usize, len: usize, out: usize, at: f64| Request {
            arrival_s: at,
            ignore_eos: true,
            sampling: SamplingParams::greedy(),
            ..Request::greedy(id as u64, prompt(id, len), out)
        };
        let short = (0..self.short).map(|i| req(i, self.short_prompt, self.short_output, 0.0));
        let long = (0..self.long).map(|j| {
            req(self.short + j, self.long_prompt, self.long_output, self.first_long_s + j as f64 * self.long_every_s)
        });
        short.chain(long).collect()
    }
}

/// One run of the mixed workload.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkedRow {
    /// The step's token budget (`max_num_batched_tokens`), and whether prompts were chunked.
    pub budget: usize,
    pub chunked: bool,
    pub steps: usize,
    pub tokens_per_s: f64,
    /// Gaps between consecutive tokens of the short requests (what a long prompt interrupts).
    pub itl_p50_ms: f64,
    pub itl_p99_ms: f64,
    pub ttft_short_p50_ms: f64,
    pub ttft_short_p99_ms: f64,
    pub ttft_long_p50_ms: f64,
    pub ttft_long_p99_ms: f64,
}

/// Every run, and whether all of them gave every request the same tokens.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkedReport {
    pub spec: MixedSpec,
    pub rows: Vec<ChunkedRow>,
    pub same_tokens: bool,
}

/// The engine of one run: chapter 5's defaults for the memory of 16 slots of `max_len`, at most
/// 16 running, with this budget and chunking on or off.
fn engine(max_len: usize, budget: usize, chunked: bool) -> PagedEngine {
    PagedEngine {
        budget: KvBudget::Slots(16),
        max_len: Some(max_len),
        max_running: Some(16),
        max_tokens_per_step: Some(budget),
        chunked_prefill: chunked,
        ..PagedEngine::default()
    }
}

fn row(budget: usize, chunked: bool, short: usize, out: &RunOutput) -> ChunkedRow {
    let (shorts, longs) = out.outputs.split_at(short.min(out.outputs.len()));
    let gaps: Vec<f64> = shorts.iter().flat_map(|o| o.token_latencies_s.iter().map(|g| g * 1e3)).collect();
    let ttft = |os: &[ch00_serving::RequestOutput]| os.iter().map(|o| o.ttft_s * 1e3).collect::<Vec<_>>();
    let (ts, tl) = (ttft(shorts), ttft(longs));
    ChunkedRow {
        budget,
        chunked,
        steps: out.stats.steps,
        tokens_per_s: out.stats.tokens_per_s,
        itl_p50_ms: percentile(&gaps, 50.0),
        itl_p99_ms: percentile(&gaps, 99.0),
        ttft_short_p50_ms: percentile(&ts, 50.0),
        ttft_short_p99_ms: percentile(&ts, 99.0),
        ttft_long_p50_ms: percentile(&tl, 50.0),
        ttft_long_p99_ms: percentile(&tl, 99.0),
    }
}

// ANCHOR: run
/// Runs the mixed workload without chunking (budget `max(max_len, 2048)`, chapter 4's rule: any
/// prompt fits one step) and then chunked at each of `budgets`, on `model`.
pub fn run(model: &Model, spec: &MixedSpec, budgets: &[usize]) -> Result<ChunkedReport> {
    let max_len = model.config.max_position_embeddings.min(4096);
    ensure!(spec.long_prompt + spec.long_output <= max_len, "the long prompts do not fit max_len {max_len}");
    let requests = spec.requests(model.config.vocab_size);
    let opts = RunOptions::default();
    let unchunked_budget = max_len.max(2048);
    let base = engine(max_len, unchunked_budget, false).run(model, &requests, &opts)?;
    let mut rows = vec![row(unchunked_budget, false, spec.short, &base)];
    let mut same_tokens = true;
    for &b in budgets {
        let out = engine(max_len, b, true).run(model, &requests, &opts)?;
        same_tokens &= out.outputs.len() == base.outputs.len()
            && out.outputs.iter().zip(&base.outputs).all(|(a, b)| a.tokens == b.tokens);
        rows.push(row(b, true, spec.short, &out));
    }
    Ok(ChunkedReport { spec: *spec, rows, same_tokens })
}
// ANCHOR_END: run

/// The report as a Markdown table with its footnote (`machine`, `command`).
pub fn to_markdown(r: &ChunkedReport, machine: &str, command: &str) -> String {
    let s = &r.spec;
    let mut out = String::from(
        "| prefill | token budget | steps | tokens/s | ITL p50 | ITL p99 | TTFT short p50 / p99 | TTFT long p50 / p99 |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in &r.rows {
        let how = if row.chunked { "chunked" } else { "whole prompt in one step" };
        out += &format!(
            "| {how} | {} | {} | {:.0} | {:.0} ms | {:.0} ms | {:.0} / {:.0} ms | {:.0} / {:.0} ms |\n",
            row.budget,
            row.steps,
            row.tokens_per_s,
            row.itl_p50_ms,
            row.itl_p99_ms,
            row.ttft_short_p50_ms,
            row.ttft_short_p99_ms,
            row.ttft_long_p50_ms,
            row.ttft_long_p99_ms
        );
    }
    out += &format!(
        "\n*{} short requests ({} prompt tokens, {} output) decoding from time 0, and {} prompts of {} tokens ({} output) arriving at {} s and every {} s after, on chapter 5's engine (16 sequences at most, the memory of 16 slots); ITL over the short requests' token gaps. Every run gave every request the same tokens: **{}**. `{command}` on {machine}.*\n",
        s.short,
        s.short_prompt,
        s.short_output,
        s.long,
        s.long_prompt,
        s.long_output,
        s.first_long_s,
        s.long_every_s,
        if r.same_tokens { "yes" } else { "NO" }
    );
    out
}
