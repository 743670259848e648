//! The numbers of the book's interview pages (the cheat sheet and the mock system-design interview),
//! computed with the project's own calculators: `kv_bytes_per_token` and `MemoryPlan` (chapter 0),
//! `blocks_for_budget` (chapter 5) and the capacity accounting run that drives chapter 4's and
//! chapter 5's schedulers. Nothing here is measured, so the output is the same on every machine;
//! `tests/interview.rs` checks that the files in `book/src/generated` are what this code writes.
//! The command is `examples/interview.rs`.

use crate::capacity::{accounting_run, AccountingSpec};
use anyhow::Result;
use ch00_model::{kv_bytes_per_token, Arrivals, DType, LengthDist, LlamaConfig, MemoryPlan, WorkloadSpec};
use ch05_paged_attention::blocks_for_budget;
use std::fmt::Write;

const GB: f64 = 1e9;
const KIB: f64 = 1024.0;

/// The interview's inputs. The card's figures are datasheet values (inputs, not measurements).
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    pub users: usize,
    pub gpu_gb: f64,
    pub reserve_gb: f64,
    pub bandwidth_tbs: f64,
    pub tflops: f64,
    pub tpot_ms: f64,
    /// The follow-up question's tighter target.
    pub tight_tpot_ms: f64,
    pub max_len: usize,
}

impl Default for Inputs {
    /// 256 concurrent users of Llama-3-70B on "80 GB" H100 SXM cards (3.35 TB/s HBM3, 989 dense
    /// bf16 TFLOP/s), 4 GB per card kept for activations and the CUDA context, 50 ms per output
    /// token (20 ms in the follow-up), contexts capped at 4,096 tokens.
    fn default() -> Self {
        Inputs {
            users: 256,
            gpu_gb: 80.0,
            reserve_gb: 4.0,
            bandwidth_tbs: 3.35,
            tflops: 989.0,
            tpot_ms: 50.0,
            tight_tpot_ms: 20.0,
            max_len: 4096,
        }
    }
}

impl Inputs {
    /// Errors when an input makes the questions meaningless.
    pub fn validate(&self) -> Result<()> {
        let positive = [self.gpu_gb, self.bandwidth_tbs, self.tflops, self.tpot_ms, self.tight_tpot_ms];
        if self.users == 0 || self.max_len == 0 || positive.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
            anyhow::bail!("users, max_len, gpu_gb, bandwidth_tbs, tflops, tpot_ms and tight_tpot_ms must be positive");
        }
        if !(self.reserve_gb.is_finite() && self.reserve_gb >= 0.0) {
            anyhow::bail!("reserve_gb must be at least 0");
        }
        // Sizes stay far from u64's limit (a group of 8 such cards included).
        if self.gpu_gb > 1e6 || self.reserve_gb > 1e6 || self.max_len > 1 << 30 {
            anyhow::bail!("gpu_gb and reserve_gb must be at most 10^6 GB, max_len at most 2^30 tokens");
        }
        Ok(())
    }
}

/// Every file of the interview pages: (file name in `book/src/generated`, Markdown).
pub fn files(inputs: &Inputs) -> Result<Vec<(&'static str, String)>> {
    inputs.validate()?;
    let files = [
        ("cheatsheet-memory.md", cheatsheet_memory(inputs)?),
        ("cheatsheet-batching.md", cheatsheet_batching()),
        ("cheatsheet-paging.md", cheatsheet_paging()?),
        ("cheatsheet-roofline.md", cheatsheet_roofline(inputs)?),
        ("mock-inputs.md", mock_inputs(inputs)?),
        ("mock-per-card.md", mock_per_card(inputs)?),
        ("mock-designs.md", mock_designs(inputs, inputs.tpot_ms)?),
        ("mock-designs-tight.md", mock_designs(inputs, inputs.tight_tpot_ms)?),
        ("mock-static.md", mock_static(inputs)?),
    ];
    Ok(files.into_iter().map(|(name, text)| (name, format!("{text}\n{}", footer(inputs)))).collect())
}

/// The command line that produced the files, with every input that differs from the default.
fn footer(i: &Inputs) -> String {
    let d = Inputs::default();
    let mut flags = String::new();
    for (flag, v, dv) in [
        ("--users", i.users as f64, d.users as f64),
        ("--gpu-gb", i.gpu_gb, d.gpu_gb),
        ("--reserve-gb", i.reserve_gb, d.reserve_gb),
        ("--bandwidth-tbs", i.bandwidth_tbs, d.bandwidth_tbs),
        ("--tflops", i.tflops, d.tflops),
        ("--tpot-ms", i.tpot_ms, d.tpot_ms),
        ("--tight-tpot-ms", i.tight_tpot_ms, d.tight_tpot_ms),
        ("--max-len", i.max_len as f64, d.max_len as f64),
    ] {
        if v != dv {
            let _ = write!(flags, " {flag} {v}");
        }
    }
    format!(
        "*Computed, not measured (the same on every machine), by `cargo run --release --example interview -- --markdown book/src/generated{flags}`.*\n"
    )
}

fn f16_config(name: &str) -> Result<(LlamaConfig, u64)> {
    let c = LlamaConfig::named(name)?;
    let weights = c.param_count() * DType::F16.bytes();
    Ok((c, weights))
}

fn kib(b: u64) -> String {
    format!("{:.0} KiB", b as f64 / KIB)
}

fn gb(b: u64) -> String {
    format!("{:.1} GB", b as f64 / GB)
}

/// Thousands separators: 1234567 → "1,234,567".
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes per token, per request and weights for the real shapes, and what fits on one card.
fn cheatsheet_memory(i: &Inputs) -> Result<String> {
    let mut o = String::new();
    let len = i.max_len as u64;
    writeln!(o, "| shape (fp16) | layers | query / KV heads | head_dim | KV per token | KV per {}-token request | weights | {}-token requests on one {:.0} GB card |", thousands(len), thousands(len), i.gpu_gb)?;
    writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
    for name in ["llama-7b", "llama3-8b", "llama3-70b"] {
        let (c, weights) = f16_config(name)?;
        let act = ((i.reserve_gb * GB) as u64, (i.reserve_gb * GB) as u64);
        let plan = MemoryPlan::new(&c, DType::F16, 1, len, weights, act, (i.gpu_gb * GB) as u64)?;
        let fit = if weights + act.1 > plan.gpu {
            "none: the weights alone do not fit".to_string()
        } else {
            plan.max_requests().to_string()
        };
        writeln!(
            o,
            "| `{name}` | {} | {} / {} | {} | {} | {} | {} | {fit} |",
            c.num_hidden_layers,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
            kib(plan.per_token),
            gb(plan.per_request),
            gb(weights),
        )?;
    }
    writeln!(o, "\nRequests fit beside the weights and {:.0} GB kept for activations, each reserved for all {} tokens (`MemoryPlan::max_requests`).", i.reserve_gb, thousands(len))?;
    Ok(o)
}

/// Expected utilisation of static batching with exponential output lengths: 1 / H_B.
fn cheatsheet_batching() -> String {
    let mut o = String::from("| batch B | H<sub>B</sub> = 1 + ½ + … + 1/B | static utilisation 1 / H<sub>B</sub> |\n|---:|---:|---:|\n");
    for b in [1usize, 2, 4, 8, 16, 32, 64, 128] {
        let h: f64 = (1..=b).map(|k| 1.0 / k as f64).sum();
        let _ = writeln!(o, "| {b} | {h:.2} | {:.2} |", 1.0 / h);
    }
    o
}

/// Waste of contiguous slots vs paged blocks in the book's accounting run (chapter 5).
fn cheatsheet_paging() -> Result<String> {
    let spec = AccountingSpec::default();
    let run = accounting_run(&spec)?;
    let mut o = String::new();
    writeln!(o, "| design ({} shape, KV budget {:.0} GiB, {} requests) | KV reserved that holds no token | requests running while others wait |", spec.config, run.budget_bytes as f64 / (1u64 << 30) as f64, run.n_requests)?;
    writeln!(o, "|---|---:|---:|")?;
    writeln!(o, "| contiguous slots of {} tokens (ch04) | {:.1}% | {:.1} |", run.max_len, run.contiguous.waste_pct, run.contiguous.mean_running_queued)?;
    writeln!(o, "| blocks of {} tokens (ch05) | {:.1}% | {:.1} |", run.block_size, run.paged.waste_pct, run.paged.mean_running_queued)?;
    writeln!(o, "\nPaged / contiguous: **{:.2}×** the requests in the same memory (the capacity accounting run of chapter 5).", run.queued_running_ratio)?;
    Ok(o)
}

/// Why decode is memory-bound: the ridge point of the card, and the bandwidth floor of a decode
/// step at batch 1 for each shape on the fewest cards that hold it.
fn cheatsheet_roofline(i: &Inputs) -> Result<String> {
    let ridge = i.tflops / i.bandwidth_tbs; // FLOP per byte
    let mut o = String::new();
    writeln!(o, "| shape (fp16) | cards (tensor parallel) | weights read per card per step | decode step floor, batch 1 | tokens/s of one request, at most |")?;
    writeln!(o, "|---|---:|---:|---:|---:|")?;
    for name in ["llama-7b", "llama3-8b", "llama3-70b"] {
        let (c, weights) = f16_config(name)?;
        let mut fitted = None;
        for tp in TP {
            let card = per_card(&c, weights, tp, i)?;
            if card.kv_budget > 0 {
                fitted = Some((tp, card));
                break;
            }
        }
        let Some((tp, card)) = fitted else { continue };
        let floor = decode_floor_ms(&card, 0.0, 0.0, i);
        writeln!(o, "| `{name}` | {tp} | {} | {floor:.1} ms | {:.0} |", gb(card.weights), 1e3 / floor)?;
    }
    writeln!(
        o,
        "
Ridge point of the card: {:.0} dense bf16 TFLOP/s ÷ {} TB/s = **{ridge:.0} FLOP per byte**. A decode step over fp16 weights does 2 FLOPs per parameter per sequence and reads each parameter's 2 bytes once, about B FLOPs per byte at batch B: decode stays memory-bound until the batch nears {ridge:.0} (the KV reads only lower the intensity further).",
        i.tflops, i.bandwidth_tbs
    )?;
    Ok(o)
}

/// The mock interview's workload: prompts uniform 512..=2048 tokens, outputs exponential with
/// mean 256 (a chat service), far more requests than fit, all queued at once.
fn mock_workload(i: &Inputs) -> WorkloadSpec {
    WorkloadSpec {
        n_requests: 2000,
        prompt_len: LengthDist::Uniform { lo: 512, hi: 2048 },
        output_len: LengthDist::Exponential { mean: 256.0, min: 1, max: i.max_len.saturating_sub(2048).max(1) },
        arrivals: Arrivals::AllAtOnce,
        seed: 0,
    }
}

/// Mean prompt length and mean final length (prompt + output) of the workload's requests.
fn mock_lengths(i: &Inputs, vocab: usize) -> (f64, f64) {
    let reqs = mock_workload(i).generate(vocab);
    let n = reqs.len().max(1) as f64;
    let prompt = reqs.iter().map(|r| r.prompt.len()).sum::<usize>() as f64 / n;
    let total = reqs.iter().map(|r| (r.prompt.len() + r.max_new_tokens).min(i.max_len)).sum::<usize>() as f64 / n;
    (prompt, total)
}

fn mock_inputs(i: &Inputs) -> Result<String> {
    let (c, weights) = f16_config("llama3-70b")?;
    let (prompt, total) = mock_lengths(i, c.vocab_size);
    let mut o = String::from("| input | value |\n|---|---|\n");
    writeln!(o, "| model | `llama3-70b` shape: {} layers, {} query heads, {} KV heads × head_dim {}, {} parameters |", c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim, thousands(c.param_count()))?;
    writeln!(o, "| weights and KV cache | fp16/bf16 (2 bytes): weights {} |", gb(weights))?;
    writeln!(o, "| users | {} concurrent, prompts uniform 512–2,048 tokens (mean {}), outputs exponential with mean 256 (mean request {} tokens), context capped at {} |", i.users, thousands(prompt.round() as u64), thousands(total.round() as u64), thousands(i.max_len as u64))?;
    writeln!(o, "| target | at most {:.0} ms per output token (TPOT); the follow-up asks for {:.0} ms |", i.tpot_ms, i.tight_tpot_ms)?;
    writeln!(o, "| card | {:.0} GB, of which {:.0} GB kept for activations and the CUDA context; {} TB/s memory bandwidth, {:.0} dense bf16 TFLOP/s (datasheet figures, H100 SXM) |", i.gpu_gb, i.reserve_gb, i.bandwidth_tbs, i.tflops)?;
    Ok(o)
}

// ANCHOR: per_card
/// Tensor parallelism over `tp` cards: each card holds 1/tp of the weights and 1/tp of the KV
/// heads, so 1/tp of every token's KV. The KV budget of a card is what the weights leave.
struct PerCard {
    weights: u64,
    kv_budget: i64,
    kv_per_token: u64,
    /// Tokens of context the whole group holds (every card holds its slice of each).
    tokens: u64,
    blocks: u64,
}

fn per_card(c: &LlamaConfig, weights: u64, tp: usize, i: &Inputs) -> Result<PerCard> {
    let shard = LlamaConfig { num_key_value_heads: c.num_key_value_heads / tp, ..c.clone() };
    let kv_per_token = kv_bytes_per_token(&shard, DType::F16);
    let weights = weights / tp as u64;
    let kv_budget = (i.gpu_gb * GB) as i64 - weights as i64 - (i.reserve_gb * GB) as i64;
    let tokens = if kv_budget > 0 { kv_budget as u64 / kv_per_token } else { 0 };
    let blocks = if kv_budget > 0 { blocks_for_budget(&shard, 16, kv_budget as u64, DType::F16)? as u64 } else { 0 };
    Ok(PerCard { weights, kv_budget, kv_per_token, tokens, blocks })
}
// ANCHOR_END: per_card

// ANCHOR: floor
/// The bandwidth floor of one decode step on one card: every weight and every cached K/V row of
/// the batch is read at least once (1/tp of each per card), and nothing is faster than reading
/// it. Communication between the cards is left out: a real step is slower.
fn decode_floor_ms(card: &PerCard, batch: f64, mean_len: f64, i: &Inputs) -> f64 {
    let bytes = card.weights as f64 + batch * mean_len * card.kv_per_token as f64;
    bytes / (i.bandwidth_tbs * 1e12) * 1e3
}

/// The compute floor of a prefill: 2 FLOPs per parameter per prompt token, spread over tp cards
/// at their peak rate (attention's own FLOPs and any inefficiency only add to it).
fn prefill_floor_ms(params: u64, prompt: f64, tp: usize, i: &Inputs) -> f64 {
    2.0 * params as f64 * prompt / (tp as f64 * i.tflops * 1e12) * 1e3
}
// ANCHOR_END: floor

const TP: [usize; 4] = [1, 2, 4, 8];

fn mock_per_card(i: &Inputs) -> Result<String> {
    let (c, weights) = f16_config("llama3-70b")?;
    let (prompt, total) = mock_lengths(i, c.vocab_size);
    let mut o = String::new();
    writeln!(o, "| tensor parallel | weights per card | KV budget per card | KV per token per card | tokens held | blocks of 16 per card | {}-token slots | requests of {} tokens | decode floor, weights only | prefill floor, {}-token prompt |", thousands(i.max_len as u64), thousands(total.round() as u64), thousands(prompt.round() as u64))?;
    writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for tp in TP {
        let card = per_card(&c, weights, tp, i)?;
        if card.kv_budget <= 0 {
            writeln!(o, "| {tp} | {} | none: the weights do not fit | {} | — | — | — | — | — | — |", gb(card.weights), kib(card.kv_per_token))?;
            continue;
        }
        writeln!(
            o,
            "| {tp} | {} | {} | {} | {} | {} | {} | {} | {:.1} ms | {:.0} ms |",
            gb(card.weights),
            gb(card.kv_budget as u64),
            kib(card.kv_per_token),
            thousands(card.tokens),
            thousands(card.blocks),
            card.tokens / i.max_len as u64,
            (card.tokens as f64 / total) as u64,
            decode_floor_ms(&card, 0.0, total, i),
            prefill_floor_ms(c.param_count(), prompt, tp, i),
        )?;
    }
    Ok(o)
}

/// The largest batch of `mean_len`-token requests whose decode step floor stays within `tpot_ms`
/// (`None` when not even one request does: the weights alone take longer to read).
fn max_batch_within(card: &PerCard, mean_len: f64, tpot_ms: f64, i: &Inputs) -> Option<usize> {
    let bytes = tpot_ms / 1e3 * i.bandwidth_tbs * 1e12 - card.weights as f64;
    let per_request = mean_len * card.kv_per_token as f64;
    (bytes >= per_request).then(|| (bytes / per_request) as usize)
}

/// One layout of the designs table: `tp` cards per group, a KV design, and what follows.
struct Layout {
    tp: usize,
    design: &'static str,
    /// Requests the group's KV memory holds while others wait (accounting run).
    held: f64,
    /// The largest batch within the target by the step floor; `None` when not even one.
    max_batch: Option<usize>,
    /// Weights-only step floor (ms), for the rows that cannot meet the target.
    weights_ms: f64,
    groups: usize,
    batch: usize,
    step_ms: f64,
}

/// For each degree of tensor parallelism that fits: how many requests a group holds with
/// contiguous slots (chapter 4) and with paged blocks (chapter 5) — from the accounting run, which
/// drives the real schedulers — how large a batch the step floor allows within `tpot_ms`, and so
/// how many groups of cards the users need.
fn layouts(i: &Inputs, tpot_ms: f64) -> Result<Vec<Layout>> {
    let (c, weights) = f16_config("llama3-70b")?;
    let (_, total) = mock_lengths(i, c.vocab_size);
    let mut out = Vec::new();
    for tp in TP {
        let card = per_card(&c, weights, tp, i)?;
        if card.kv_budget <= 0 {
            continue;
        }
        // The group as one big card: tp × the card, tp × the reserve, all the weights.
        let spec = AccountingSpec {
            config: "llama3-70b".into(),
            dtype: "f16".into(),
            gpu_bytes: tp as u64 * (i.gpu_gb * GB) as u64,
            weight_bytes: weights,
            reserve_bytes: tp as u64 * (i.reserve_gb * GB) as u64,
            max_len: i.max_len,
            block_size: 16,
            workload: mock_workload(i),
        };
        let Ok(run) = accounting_run(&spec) else { continue }; // not even one slot fits
        let max_batch = max_batch_within(&card, total, tpot_ms, i);
        let designs = [("contiguous slots (ch04)", run.contiguous.mean_running_queued), ("paged blocks (ch05)", run.paged.mean_running_queued)];
        for (design, held) in designs {
            let per_group = (held.floor() as usize).min(max_batch.unwrap_or(1)).max(1);
            let groups = i.users.div_ceil(per_group);
            let batch = i.users.div_ceil(groups);
            let step_ms = decode_floor_ms(&card, batch as f64, total, i);
            let weights_ms = decode_floor_ms(&card, 0.0, total, i);
            out.push(Layout { tp, design, held, max_batch, weights_ms, groups, batch, step_ms });
        }
    }
    Ok(out)
}

fn mock_designs(i: &Inputs, tpot_ms: f64) -> Result<String> {
    let rows = layouts(i, tpot_ms)?;
    let mut o = String::new();
    writeln!(o, "| tensor parallel | KV design | requests held while others wait | largest batch within {tpot_ms:.0} ms | groups for {} users | cards | batch per group | decode floor per step |", i.users)?;
    writeln!(o, "|---:|---|---:|---:|---:|---:|---:|---:|")?;
    for r in &rows {
        let (tp, design, held) = (r.tp, r.design, r.held);
        match r.max_batch {
            None => writeln!(o, "| {tp} | {design} | {held:.1} | none: reading the weights alone takes {:.1} ms | — | — | — | — |", r.weights_ms)?,
            Some(max) => writeln!(o, "| {tp} | {design} | {held:.1} | {max} | {} | {} | {} | {:.1} ms |", r.groups, r.groups * tp, r.batch, r.step_ms)?,
        }
    }
    let ok: Vec<&Layout> = rows.iter().filter(|r| r.max_batch.is_some()).collect();
    match ok.iter().map(|r| r.groups * r.tp).min() {
        Some(fewest) => {
            let best: Vec<String> = ok
                .iter()
                .filter(|r| r.groups * r.tp == fewest)
                .map(|r| format!("{}-way tensor parallel, {}, {} group{}", r.tp, r.design, r.groups, if r.groups == 1 { "" } else { "s" }))
                .collect();
            writeln!(o, "\nFewest cards within {tpot_ms:.0} ms per token by the bandwidth floor: **{fewest}** ({}).", best.join("; "))?;
        }
        None => writeln!(o, "\nNo layout here meets {tpot_ms:.0} ms per token.")?,
    }
    Ok(o)
}

/// Static batching (chapter 3) on the contiguous layouts' slots: a batch of B stays together for
/// about H_B times the mean output, so a newcomer waits that long for a slot, and only 1/H_B of
/// the slot-steps do work.
fn mock_static(i: &Inputs) -> Result<String> {
    let (c, _) = f16_config("llama3-70b")?;
    let reqs = mock_workload(i).generate(c.vocab_size);
    let mean_out = reqs.iter().map(|r| r.max_new_tokens).sum::<usize>() as f64 / reqs.len().max(1) as f64;
    let mut o = String::new();
    writeln!(o, "| tensor parallel | batch (contiguous slots) | H<sub>B</sub> | slot utilisation 1 / H<sub>B</sub> | a batch lasts (steps, {mean_out:.0} × H<sub>B</sub>) | at the step floor |")?;
    writeln!(o, "|---:|---:|---:|---:|---:|---:|")?;
    for r in layouts(i, i.tpot_ms)?.iter().filter(|r| r.design.starts_with("contiguous") && r.max_batch.is_some()) {
        let h: f64 = (1..=r.batch).map(|k| 1.0 / k as f64).sum();
        let steps = mean_out * h;
        writeln!(o, "| {} | {} | {h:.2} | {:.2} | {steps:.0} | {:.1} s |", r.tp, r.batch, 1.0 / h, steps * r.step_ms / 1e3)?;
    }
    Ok(o)
}
