//! Chunked prefill, measured: long prompts arriving among running decodes, served by chapter 5's
//! engine with and without chunked prefill, and the token budget swept (the trade-off
//! Sarathi-Serve describes: a smaller budget, smoother decodes, more steps).

use crate::bench::rows::percentile;
use anyhow::{ensure, Result};
use ch00_model::{LlamaConfig, SamplingParams};
use ch00_serving::{Request, RunOutput};
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
    /// Most sequences running at once; the pool (on the CPU) has the memory of as many slots.
    pub max_running: usize,
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
            max_running: 16,
        }
    }

    /// The GPU run on a Llama-2-7B shape (context 4096): long prompts of 4,000 tokens among 32
    /// decoding requests, arriving while they decode.
    pub fn gpu_7b() -> Self {
        MixedSpec {
            short: 32,
            short_prompt: 128,
            short_output: 256,
            long: 4,
            long_prompt: 4000,
            long_output: 8,
            first_long_s: 0.3,
            long_every_s: 0.4,
            max_running: 64,
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

/// One setting of the mixed workload: the median over the rounds (each round runs every setting
/// once, in turn), and the range of throughput and ITL p99 across rounds.
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
    pub rounds: usize,
    pub tokens_per_s_range: (f64, f64),
    pub itl_p99_ms_range: (f64, f64),
}

/// Every setting, and whether all runs gave every request the same tokens.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkedReport {
    pub spec: MixedSpec,
    pub rows: Vec<ChunkedRow>,
    pub same_tokens: bool,
    /// Share of all runs' generated tokens equal, position by position, to the first run's (1.0
    /// in f32; in f16 a different split of the same work can flip a near-tie).
    pub same_token_share: f64,
}

/// The engine settings of one run: at most `max_running` sequences, a pool of the memory of as
/// many slots of `max_len` (chapter 6 sizes its pool on the card instead), this budget, chunking
/// on or off.
pub fn engine(max_len: usize, budget: usize, chunked: bool, max_running: usize) -> PagedEngine {
    PagedEngine {
        budget: KvBudget::Slots(max_running),
        max_len: Some(max_len),
        max_running: Some(max_running),
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
    let itl_p99_ms = percentile(&gaps, 99.0);
    ChunkedRow {
        budget,
        chunked,
        steps: out.stats.steps,
        tokens_per_s: out.stats.tokens_per_s,
        itl_p50_ms: percentile(&gaps, 50.0),
        itl_p99_ms,
        ttft_short_p50_ms: percentile(&ts, 50.0),
        ttft_short_p99_ms: percentile(&ts, 99.0),
        ttft_long_p50_ms: percentile(&tl, 50.0),
        ttft_long_p99_ms: percentile(&tl, 99.0),
        rounds: 1,
        tokens_per_s_range: (out.stats.tokens_per_s, out.stats.tokens_per_s),
        itl_p99_ms_range: (itl_p99_ms, itl_p99_ms),
    }
}

/// The median of every figure over the rounds of one setting, with the spread of two.
fn median_row(rounds: &[ChunkedRow]) -> ChunkedRow {
    let med = |f: fn(&ChunkedRow) -> f64| percentile(&rounds.iter().map(f).collect::<Vec<_>>(), 50.0);
    let range = |f: fn(&ChunkedRow) -> f64| {
        rounds.iter().map(f).fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
    };
    ChunkedRow {
        budget: rounds[0].budget,
        chunked: rounds[0].chunked,
        steps: rounds[0].steps,
        tokens_per_s: med(|r| r.tokens_per_s),
        itl_p50_ms: med(|r| r.itl_p50_ms),
        itl_p99_ms: med(|r| r.itl_p99_ms),
        ttft_short_p50_ms: med(|r| r.ttft_short_p50_ms),
        ttft_short_p99_ms: med(|r| r.ttft_short_p99_ms),
        ttft_long_p50_ms: med(|r| r.ttft_long_p50_ms),
        ttft_long_p99_ms: med(|r| r.ttft_long_p99_ms),
        rounds: rounds.len(),
        tokens_per_s_range: range(|r| r.tokens_per_s),
        itl_p99_ms_range: range(|r| r.itl_p99_ms),
    }
}

// ANCHOR: run
/// Runs the mixed workload without chunking (budget `max(max_len, 2048)`, chapter 4's rule: any
/// prompt fits one step) and chunked at each of `budgets`, for a model of `config`: `rounds`
/// rounds, each running every setting once in turn (so a slow spell of a shared machine hits all
/// settings). `run_one` runs one setting's engine on the requests (chapter 5 on the CPU, or
/// chapter 6 on a GPU).
pub fn run(
    config: &LlamaConfig,
    spec: &MixedSpec,
    budgets: &[usize],
    rounds: usize,
    mut run_one: impl FnMut(&PagedEngine, &[Request]) -> Result<RunOutput>,
) -> Result<ChunkedReport> {
    let max_len = config.max_position_embeddings.min(4096);
    ensure!(spec.long_prompt + spec.long_output <= max_len, "the long prompts do not fit max_len {max_len}");
    ensure!(rounds >= 1, "at least one round");
    let requests = spec.requests(config.vocab_size);
    let settings: Vec<(usize, bool)> =
        std::iter::once((max_len.max(2048), false)).chain(budgets.iter().map(|&b| (b, true))).collect();
    let mut runs: Vec<Vec<ChunkedRow>> = vec![Vec::new(); settings.len()];
    let mut base: Option<RunOutput> = None;
    let mut same_tokens = true;
    let (mut equal, mut compared) = (0usize, 0usize);
    for _ in 0..rounds {
        for (i, &(budget, chunked)) in settings.iter().enumerate() {
            let out = run_one(&engine(max_len, budget, chunked, spec.max_running), &requests)?;
            if let Some(b) = &base {
                same_tokens &= out.outputs.len() == b.outputs.len()
                    && out.outputs.iter().zip(&b.outputs).all(|(x, y)| x.tokens == y.tokens);
                for (x, y) in out.outputs.iter().zip(&b.outputs) {
                    compared += x.tokens.len().max(y.tokens.len());
                    equal += x.tokens.iter().zip(&y.tokens).filter(|(p, q)| p == q).count();
                }
            }
            runs[i].push(row(budget, chunked, spec.short, &out));
            base.get_or_insert(out);
        }
    }
    let same_token_share = equal as f64 / compared.max(1) as f64;
    Ok(ChunkedReport { spec: *spec, rows: runs.iter().map(|r| median_row(r)).collect(), same_tokens, same_token_share })
}
// ANCHOR_END: run

/// The report as a Markdown table with its footnote (`machine`, `command`).
pub fn to_markdown(r: &ChunkedReport, machine: &str, command: &str) -> String {
    let s = &r.spec;
    let mut out = String::from(
        "| prefill | token budget | steps | tokens/s (range) | ITL p50 | ITL p99 (range) | TTFT short p50 / p99 | TTFT long p50 / p99 |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in &r.rows {
        let how = if row.chunked { "chunked" } else { "whole prompt in one step" };
        out += &format!(
            "| {how} | {} | {} | {:.0} ({:.0}–{:.0}) | {:.0} ms | {:.0} ms ({:.0}–{:.0}) | {:.0} / {:.0} ms | {:.0} / {:.0} ms |\n",
            row.budget,
            row.steps,
            row.tokens_per_s,
            row.tokens_per_s_range.0,
            row.tokens_per_s_range.1,
            row.itl_p50_ms,
            row.itl_p99_ms,
            row.itl_p99_ms_range.0,
            row.itl_p99_ms_range.1,
            row.ttft_short_p50_ms,
            row.ttft_short_p99_ms,
            row.ttft_long_p50_ms,
            row.ttft_long_p99_ms
        );
    }
    out += &format!(
        "\n*{} short requests ({} prompt tokens, {} output) decoding from time 0, and {} prompts of {} tokens ({} output) arriving at {} s and every {} s after, on chapter 5's block scheduler ({} sequences at most); ITL over the short requests' token gaps; medians of {} rounds, each running every setting once in turn, with the range across rounds. Every run gave every request the same tokens: **{}**{}. `{command}` on {machine}.*\n",
        s.short,
        s.short_prompt,
        s.short_output,
        s.long,
        s.long_prompt,
        s.long_output,
        s.first_long_s,
        s.long_every_s,
        s.max_running,
        r.rows.first().map_or(0, |row| row.rounds),
        if r.same_tokens { "yes" } else { "no" },
        if r.same_tokens {
            String::new()
        } else {
            format!(" ({:.1}% of the tokens, position by position, equal to the first run's: a different split of the same work rounds differently in half precision, and a near-tie can flip)", 100.0 * r.same_token_share)
        }
    );
    out
}
