//! The KV-cache memory calculator's report (`kvserve memory`, appendix A): what a batch of
//! requests of one shape costs on one GPU, in exact units, the scenarios beside it, and what
//! grouped-query attention saves. The arithmetic is chapter 0's `MemoryPlan`; this writes it out.

use anyhow::{bail, Result};
use crate::card::card_budget;
use crate::units::thousands;
use ch00_model::{kv_bytes_per_token, Card, LlamaConfig, MemoryPlan, Precision, GPU_MEMORY_UTILIZATION};
use std::fmt::Write;

/// What to size: the weights' and the KV cache's precision, the batch, the GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryQuery {
    pub weights: Precision,
    pub kv: Precision,
    /// Requests held at once.
    pub batch: u64,
    /// Tokens per request (prompt + output).
    pub seq_len: u64,
    /// GPU memory in MiB, as `nvidia-smi` reports it (HBM is sized in binary units: an "80 GB"
    /// H100 has 81,559 MiB = 85.5 GB).
    pub gpu_mib: f64,
    /// Activation / workspace reserve in GB, low and high estimate.
    pub activations_gb: (f64, f64),
}

impl MemoryQuery {
    /// An error (naming `kvserve memory`'s flags) for sizes the report cannot use.
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 || self.seq_len == 0 {
            bail!("--batch and --seq-len must be at least 1");
        }
        let gb_ok = |x: f64| x.is_finite() && (0.0..1e9).contains(&x);
        let (lo, hi) = self.activations_gb;
        if !gb_ok(self.gpu_mib) || self.gpu_mib == 0.0 || !gb_ok(lo) || !gb_ok(hi) {
            bail!("--gpu-mib must be above 0 and --activations-gb at least 0, both below 10^9");
        }
        Ok(())
    }
}

/// Bytes as exact binary units plus the decimal figure.
pub fn bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)];
    let (name, size) = UNITS.iter().find(|(_, s)| b >= *s).copied().unwrap_or(("B", 1));
    let binary = if b % size == 0 { format!("{} {name}", b / size) } else { format!("{:.2} {name}", b as f64 / size as f64) };
    if b < 1_000_000 {
        format!("{binary} ({b} B)")
    } else {
        format!("{binary} ({:.2} GB)", b as f64 / 1e9)
    }
}

/// Builds the report of `config` (called `name` in it) for `query`.
pub fn report(name: &str, config: &LlamaConfig, q: &MemoryQuery) -> Result<String> {
    q.validate()?;
    let dtype = q.kv;
    let gb = |x: f64| (x * 1e9).round() as u64;
    let act = (gb(q.activations_gb.0), gb(q.activations_gb.1));
    let weights = config.param_count() * q.weights.bits() / 8;
    let gpu = (q.gpu_mib * (1u64 << 20) as f64).round() as u64;
    let card = format!("{:.0} MiB ({:.1} GB)", q.gpu_mib, gpu as f64 / 1e9);
    let plan = |batch, len| MemoryPlan::new(config, dtype, batch, len, weights, act, gpu);
    let p = plan(q.batch, q.seq_len)?;
    let mut o = String::new();
    writeln!(o, "model {name}: {} layers, {} KV heads × head_dim {}, {} weights, {} KV cache", config.num_hidden_layers, config.num_key_value_heads, config.head_dim, q.weights.name(), dtype.name())?;
    writeln!(o, "units: KiB/MiB/GiB are powers of 2; GB is 10^9 bytes.")?;
    writeln!(o, "GPU memory is sized in MiB (nvidia-smi): an \"80 GB\" H100 has 81559 MiB\n")?;
    writeln!(o, "KV per token per layer  2 × {} × {} × {} = {}", config.num_key_value_heads, config.head_dim, element(dtype), bytes(p.per_token_per_layer))?;
    writeln!(o, "KV per token            × {} layers = {}", config.num_hidden_layers, bytes(p.per_token))?;
    writeln!(o, "KV per request          × {} tokens = {}", q.seq_len, bytes(p.per_request))?;
    writeln!(o, "KV for the batch        × {} requests = {}", q.batch, bytes(p.kv_total))?;
    writeln!(o, "weights                 {} params × {} = {}", config.param_count(), element(q.weights), bytes(weights))?;
    writeln!(o, "activations (reserve)   {:.0}–{:.0} GB", q.activations_gb.0, q.activations_gb.1)?;
    let (lo, hi) = p.total();
    writeln!(o, "total                   {:.1}–{:.1} GB of {card}: {}", lo as f64 / 1e9, hi as f64 / 1e9, verdict(&p))?;
    let gpu_card = Card { name: "GPU", mib: q.gpu_mib.round() as u64 };
    let b = card_budget(gpu_card, name, config, q.weights, q.kv, q.seq_len as usize);
    writeln!(
        o,
        "KV budget (card model)  {GPU_MEMORY_UTILIZATION} × {} MiB − weights − buffers {}\n                        = {}: {} tokens, {} requests of {} tokens\n",
        gpu_card.mib,
        bytes(b.buffers),
        bytes(b.kv_budget),
        thousands(b.tokens()),
        thousands(b.requests(q.seq_len)),
        q.seq_len
    )?;

    writeln!(o, "scenario          KV cache              weights + act.   total (GB)   fits in {card}?")?;
    for (batch, len) in [(1u64, 2048u64), (16, 2048), (16, 8192)] {
        let s = plan(batch, len)?;
        let (lo, hi) = s.total();
        let fixed = format!("{:.1}–{:.1} GB", (weights + act.0) as f64 / 1e9, (weights + act.1) as f64 / 1e9);
        let verdict = verdict(&s).replace(" activation", "");
        let (lo, hi) = (lo as f64 / 1e9, hi as f64 / 1e9);
        writeln!(o, "{:<17} {:<21} {:<16} {lo:>5.1}–{hi:<6.1} {verdict}", format!("{batch} × {len} tokens"), bytes(s.kv_total), fixed)?;
    }
    let mha = kv_bytes_per_token(config, dtype);
    if config.num_key_value_heads == config.num_attention_heads {
        let gqa = LlamaConfig::named("llama3-8b")?;
        let g = kv_bytes_per_token(&gqa, dtype);
        writeln!(o, "\ngrouped-query attention: llama3-8b keeps {} KV heads for {} query heads", gqa.num_key_value_heads, gqa.num_attention_heads)?;
        writeln!(o, "  → {} per token, {}× less than this model's {}", bytes(g), mha / g.max(1), bytes(mha))?;
    } else {
        writeln!(o, "\ngrouped-query attention: {} query heads share {} KV heads,", config.num_attention_heads, config.num_key_value_heads)?;
        writeln!(o, "  so KV is {}× smaller than with one KV head per query head", config.num_attention_heads / config.num_key_value_heads)?;
    }
    Ok(o)
}

/// "2 B" per element, or "1/2 B" for 4-bit formats.
fn element(p: Precision) -> String {
    match p.bits() {
        b if b % 8 == 0 => format!("{} B", b / 8),
        b => format!("{b}/8 B"),
    }
}

fn verdict(p: &MemoryPlan) -> &'static str {
    let (lo, hi) = p.total();
    if hi <= p.gpu {
        "yes"
    } else if lo <= p.gpu {
        "only with the low activation estimate"
    } else {
        "no"
    }
}

/// The weight and KV precisions [`precision_table`] compares: the engines' fp16, FP8 (Hopper's
/// tensor cores), weight-only INT4 (AWQ/GPTQ-style) and KIVI's 2-bit KV.
pub const PRECISIONS: [(Precision, Precision); 7] = [
    (Precision::F16, Precision::F16),
    (Precision::F16, Precision::Fp8),
    (Precision::Fp8, Precision::F16),
    (Precision::Fp8, Precision::Fp8),
    (Precision::Int4, Precision::F16),
    (Precision::Int4, Precision::Fp8),
    (Precision::Int4, Precision::Int2),
];

/// What the weights' and the KV cache's precision do to one card (`kvserve memory
/// --precisions`): the weights, the card model's KV budget, the tokens and requests it holds,
/// and the bytes one decode step of `q.batch` requests of `q.seq_len` tokens reads (every weight
/// once, every cached token once). Quantization scales are not counted.
pub fn precision_table(name: &str, config: &LlamaConfig, q: &MemoryQuery) -> Result<String> {
    q.validate()?;
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
    let card = Card { name: "GPU", mib: q.gpu_mib.round() as u64 };
    let mut o = String::new();
    writeln!(o, "{name} on a {} MiB card; KV budget = {GPU_MEMORY_UTILIZATION} × the card − weights − buffers (the card model); a decode step of {} requests × {} tokens reads the weights and their KV once\n", thousands(card.mib), q.batch, thousands(q.seq_len))?;
    writeln!(o, "| weights | KV cache | weight bytes | KV per token | KV budget | tokens in it | requests of {} tokens | bytes per decode step | × fp16's |", thousands(q.seq_len))?;
    writeln!(o, "|---|---|---:|---:|---:|---:|---:|---:|---:|")?;
    let step = |w: u64, kv: u64| w as f64 + (q.batch * q.seq_len) as f64 * kv as f64;
    let base = {
        let b = card_budget(card, name, config, Precision::F16, Precision::F16, q.seq_len as usize);
        step(b.weights, b.kv_per_token)
    };
    for (w, kv) in PRECISIONS {
        let b = card_budget(card, name, config, w, kv, q.seq_len as usize);
        let (budget, tokens, reqs) = if b.kv_budget == 0 {
            ("none".to_string(), "—".to_string(), "the weights do not fit".to_string())
        } else {
            (gib(b.kv_budget), thousands(b.tokens()), thousands(b.requests(q.seq_len)))
        };
        let bytes_step = step(b.weights, b.kv_per_token);
        writeln!(
            o,
            "| {} | {} | {} | {} | {budget} | {tokens} | {reqs} | {:.1} GB | {:.2} |",
            w.name(),
            kv.name(),
            gib(b.weights),
            kib(b.kv_per_token),
            bytes_step / 1e9,
            bytes_step / base
        )?;
    }
    Ok(o)
}

fn kib(b: u64) -> String {
    if b % 1024 == 0 {
        format!("{} KiB", b / 1024)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}
