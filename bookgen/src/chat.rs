//! The prefix cache across turns, measured: K conversations × T turns, each turn's prompt the whole
//! history (the previous prompt and answer) plus a new user message, sent once the previous answer
//! is complete; chapter 5's engine (or chapter 6's, through the same `StepEngine`) with its prefix
//! cache on and off, same tokens.

use crate::bench::rows::percentile;
use anyhow::{Context, Result};
use ch00_model::LlamaConfig;
pub use ch00_serving::ChatSpec;
use ch00_serving::{Request, RequestOutput, StepEngine};
use ch05_paged_attention::{KvBudget, PagedEngine};
use serde::Serialize;

/// One turn of every conversation.
#[derive(Debug, Clone, Serialize)]
pub struct TurnRow {
    pub turn: usize,
    pub mean_prompt_tokens: f64,
    /// Share of the turn's prompt tokens found in the prefix cache (cache on).
    pub hit_rate: f64,
    pub ttft_p50_off_ms: f64,
    pub ttft_p50_on_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatReport {
    pub spec: ChatSpec,
    pub rows: Vec<TurnRow>,
    /// Every answer the same with the cache on and off.
    pub same_tokens: bool,
    /// Share of answer tokens equal at the same position, cache off vs on (1 when `same_tokens`;
    /// below 1 in f16 on the GPU, where a prefix read from the cache rounds differently from one
    /// recomputed in the same pass, and a greedy pick that flips changes what follows).
    pub token_agreement: f64,
    /// Most sequences running at once (and, for chapter 5, the slots of memory of its pool).
    pub max_running: usize,
}

/// One turn's outputs (by conversation), prompt lengths, and prefix-cache lookups and hits.
struct Turn {
    outputs: Vec<RequestOutput>,
    prompt_lens: Vec<usize>,
    queried: u64,
    hit: u64,
}

// ANCHOR: chat_run
/// The conversations on a step-wise engine that `core` makes from chapter 5's settings, driven
/// step by step: every conversation's turn `t` is added once all answers of turn `t - 1` are
/// complete (turns in lockstep, so each turn's cache lookups can be counted apart).
fn run_chat<'a>(
    config: &LlamaConfig,
    spec: &ChatSpec,
    max_running: usize,
    prefix_caching: bool,
    core: &mut impl FnMut(PagedEngine) -> Result<Box<dyn StepEngine + 'a>>,
) -> Result<Vec<Turn>> {
    let vocab = config.vocab_size;
    let engine = PagedEngine {
        budget: KvBudget::Slots(max_running),
        max_len: Some(config.max_position_embeddings.min(4096)),
        max_running: Some(max_running),
        prefix_sharing: prefix_caching,
        ..PagedEngine::default()
    };
    let mut core = core(engine)?;
    let mut history: Vec<Vec<u32>> =
        (0..spec.conversations).map(|c| spec.message(c, 0, vocab)).collect();
    let mut turns = Vec::new();
    for t in 0..spec.turns {
        let before = core.load();
        let mut prompt_lens = Vec::new();
        for (c, h) in history.iter_mut().enumerate() {
            if t > 0 {
                h.extend(spec.message(c, t, vocab));
            }
            prompt_lens.push(h.len());
            let id = (t * spec.conversations + c) as u64;
            core.add_request(&Request { arrival_s: core.now_s(), ignore_eos: true, ..Request::greedy(id, h.clone(), spec.answer) })?;
        }
        let mut outputs: Vec<Option<RequestOutput>> = vec![None; spec.conversations];
        while core.has_unfinished() {
            for (_, o) in core.step()?.finished {
                let c = o.id as usize % spec.conversations;
                outputs[c] = Some(o);
            }
        }
        let outputs: Vec<RequestOutput> = outputs.into_iter().collect::<Option<_>>().context("a turn lost an answer")?;
        for (h, o) in history.iter_mut().zip(&outputs) {
            h.extend(&o.tokens); // the next turn's prompt: everything so far
        }
        let after = core.load();
        let (queried, hit) = (after.prefix_query_tokens - before.prefix_query_tokens, after.prefix_hit_tokens - before.prefix_hit_tokens);
        turns.push(Turn { outputs, prompt_lens, queried, hit });
    }
    Ok(turns)
}
// ANCHOR_END: chat_run

/// The chats with the prefix cache off, then on, on the engines `core` makes (chapter 5's
/// `PagedEngine::stepper`, or chapter 6's) for a model of `config`.
pub fn run<'a>(
    config: &LlamaConfig,
    spec: &ChatSpec,
    max_running: usize,
    mut core: impl FnMut(PagedEngine) -> Result<Box<dyn StepEngine + 'a>>,
) -> Result<ChatReport> {
    spec.validate(config.vocab_size, config.max_position_embeddings)?;
    let off = run_chat(config, spec, max_running, false, &mut core)?;
    let on = run_chat(config, spec, max_running, true, &mut core)?;
    let ttft = |t: &Turn| percentile(&t.outputs.iter().map(|o| o.ttft_s * 1e3).collect::<Vec<_>>(), 50.0);
    let pairs = || off.iter().zip(&on).flat_map(|(a, b)| a.outputs.iter().zip(&b.outputs));
    let (equal, total) = pairs().fold((0usize, 0usize), |(e, t), (x, y)| {
        (e + x.tokens.iter().zip(&y.tokens).filter(|(p, q)| p == q).count(), t + x.tokens.len().max(y.tokens.len()))
    });
    let token_agreement = equal as f64 / total.max(1) as f64;
    let same_tokens =
        off.iter().zip(&on).all(|(a, b)| a.outputs.iter().zip(&b.outputs).all(|(x, y)| x.tokens == y.tokens));
    let rows = off
        .iter()
        .zip(&on)
        .enumerate()
        .map(|(t, (a, b))| TurnRow {
            turn: t + 1,
            mean_prompt_tokens: b.prompt_lens.iter().sum::<usize>() as f64 / b.prompt_lens.len().max(1) as f64,
            hit_rate: b.hit as f64 / b.queried.max(1) as f64,
            ttft_p50_off_ms: ttft(a),
            ttft_p50_on_ms: ttft(b),
        })
        .collect();
    Ok(ChatReport { spec: *spec, rows, same_tokens, token_agreement, max_running })
}

/// The report as a Markdown table with its footnote.
/// One turn of a cache-off vs cache-on comparison, as a table row shows it.
pub struct TurnTimes {
    pub turn: usize,
    pub mean_prompt_tokens: f64,
    /// Share of the prompt tokens the cache held (cache on); `None` where nobody counted.
    pub hit_rate: Option<f64>,
    /// TTFT p50 in ms with the cache off and on.
    pub off_ms: f64,
    pub on_ms: f64,
}

/// The by-turn table of `bench-chat` and `serve-chat`: hits, TTFT p50 off and on, their ratio.
pub fn turn_table(rows: impl IntoIterator<Item = TurnTimes>) -> String {
    let mut out = String::from(
        "| turn | mean prompt | prefix-cache hits (cache on) | TTFT p50, cache off | TTFT p50, cache on | off ÷ on |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    for t in rows {
        let hits = t.hit_rate.map_or("n/a".to_string(), |h| format!("{:.0}%", 100.0 * h));
        out += &format!(
            "| {} | {:.0} tokens | {hits} | {:.0} ms | {:.0} ms | {:.1}× |\n",
            t.turn,
            t.mean_prompt_tokens,
            t.off_ms,
            t.on_ms,
            t.off_ms / t.on_ms.max(1e-9)
        );
    }
    out
}

/// `engine` says which engine ran, e.g. "Chapter 5's engine (the memory of 16 slots, 16 sequences at most)".
pub fn to_markdown(r: &ChatReport, engine: &str, machine: &str, command: &str) -> String {
    let mut out = turn_table(r.rows.iter().map(|row| TurnTimes {
        turn: row.turn,
        mean_prompt_tokens: row.mean_prompt_tokens,
        hit_rate: Some(row.hit_rate),
        off_ms: row.ttft_p50_off_ms,
        on_ms: row.ttft_p50_on_ms,
    }));
    let s = &r.spec;
    out += &format!(
        "\n*{} conversations × {} turns: a first prompt of {} tokens, then each turn the whole history plus a {}-token message; {}-token answers, greedy; every conversation's next turn sent when all answers of the turn are complete. {engine}, prefix cache off and on; the same answers both ways: **{}**. `{command}` on {machine}.*\n",
        s.conversations,
        s.turns,
        s.first_prompt,
        s.message,
        s.answer,
        if r.same_tokens { "yes".to_string() } else { format!("no, {:.1}% of answer tokens equal position by position", 100.0 * r.token_agreement) }
    );
    out
}
