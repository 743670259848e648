//! The computed tables of the pages that go past the book's engine: speculative decoding
//! (appendix E) and what attention variants and mixture-of-experts do to the KV cache and the
//! step (appendix F). Closed forms and roofline floors from datasheet inputs: computed, not
//! measured, the same on every machine.

use crate::interview::inputs::Inputs;
use crate::card::card_budget;
use crate::units::thousands;
use anyhow::Result;
use ch00_model::{kv_bytes_per_token, LlamaConfig, Precision, H100_80GB};
use std::fmt::Write;

// ANCHOR: expected_tokens
/// Tokens one verification pass yields when a draft proposes `k` tokens and each is accepted with
/// probability `alpha`, independently: the accepted prefix plus the target model's own next
/// token, 1 + α + α² + … + α^k = (1 − α^(k+1)) / (1 − α) (Leviathan et al., 2023).
pub fn expected_tokens(alpha: f64, k: u32) -> f64 {
    (0..=k).map(|i| alpha.powi(i as i32)).sum()
}
// ANCHOR_END: expected_tokens

/// Expected tokens per target pass for acceptance rates × draft lengths.
pub fn acceptance_table() -> String {
    let ks = [1u32, 2, 4, 8];
    let mut o = String::from("| acceptance rate α |");
    for k in ks {
        let _ = write!(o, " k = {k} |");
    }
    o.push_str("\n|---:|");
    o.push_str(&"---:|".repeat(ks.len()));
    o.push('\n');
    for alpha in [0.5, 0.6, 0.7, 0.8, 0.9] {
        let _ = write!(o, "| {alpha} |");
        for k in ks {
            let _ = write!(o, " {:.2} |", expected_tokens(alpha, k));
        }
        o.push('\n');
    }
    o.push_str("\nTokens per pass of the target model (accepted draft tokens + the one it computes itself), if every draft token is accepted with probability α independently of the others; k = draft length.\n");
    o
}

/// The speculation table's settings: model, context, draft length, acceptance rate.
const SPEC_MODEL: &str = "llama3-8b";
const SPEC_CONTEXT: u64 = 256;
const SPEC_K: u32 = 4;
const SPEC_ALPHA: f64 = 0.8;

// ANCHOR: step_floor
/// The least time a decode step of `batch` sequences can take on the card, each sequence feeding
/// `tokens` tokens (1 plain, k + 1 when verifying a draft) over `context` cached tokens: the larger
/// of reading every weight and cached byte once and doing 2 FLOPs per parameter per token.
pub fn step_floor_s(c: &LlamaConfig, batch: u64, tokens: u64, context: u64, i: &Inputs) -> f64 {
    let params = c.param_count() as f64;
    let bytes = params * 2.0 + (batch * context * kv_bytes_per_token(c, Precision::F16)) as f64;
    let flops = 2.0 * params * (batch * tokens) as f64;
    (bytes / (i.bandwidth_tbs * 1e12)).max(flops / (i.tflops * 1e12))
}
// ANCHOR_END: step_floor

/// Speculative decoding's best case by batch size: the plain and the verifying step's floors, and
/// the speed-up bound (tokens per pass × plain step ÷ verifying step), the draft's own cost left out.
pub fn speculation_by_batch(i: &Inputs) -> Result<String> {
    let c = LlamaConfig::named(SPEC_MODEL)?;
    let budget = card_budget(H100_80GB, SPEC_MODEL, &c, Precision::F16, Precision::F16, SPEC_CONTEXT as usize);
    let e = expected_tokens(SPEC_ALPHA, SPEC_K);
    let mut o = String::new();
    writeln!(o, "`{SPEC_MODEL}` in fp16 on one H100 ({} TB/s, {:.0} dense TFLOP/s, datasheet), {SPEC_CONTEXT}-token contexts, a draft of k = {SPEC_K} tokens accepted with α = {SPEC_ALPHA}: {e:.2} tokens per target pass.\n", i.bandwidth_tbs, i.tflops)?;
    writeln!(o, "| batch B | fits the card model's KV budget | plain step floor | bound by | verifying step floor (B × {} tokens) | bound by | speed-up bound |", SPEC_K + 1)?;
    writeln!(o, "|---:|---|---:|---|---:|---|---:|")?;
    let bound = |b: u64, t: u64| {
        let params = c.param_count() as f64;
        let bytes_s = (params * 2.0 + (b * SPEC_CONTEXT * budget.kv_per_token) as f64) / (i.bandwidth_tbs * 1e12);
        let flops_s = 2.0 * params * (b * t) as f64 / (i.tflops * 1e12);
        if flops_s > bytes_s { "compute" } else { "bytes" }
    };
    for b in [1u64, 16, 64, 128, 256, 512, 1024] {
        let plain = step_floor_s(&c, b, 1, SPEC_CONTEXT, i);
        let verify = step_floor_s(&c, b, SPEC_K as u64 + 1, SPEC_CONTEXT, i);
        let fits = if b * SPEC_CONTEXT <= budget.tokens() { "yes" } else { "no" };
        writeln!(
            o,
            "| {b} | {fits} | {:.2} ms | {} | {:.2} ms | {} | {:.2}× |",
            plain * 1e3,
            bound(b, 1),
            verify * 1e3,
            bound(b, SPEC_K as u64 + 1),
            e * plain / verify
        )?;
    }
    writeln!(o, "\nFloors count the weights and the batch's KV read once and 2 FLOPs per parameter per token (attention's own FLOPs and the draft's cost left out); a speed-up bound below 1 means speculation makes the step slower than the tokens it saves.")?;
    Ok(o)
}

/// DeepSeek-V2's attention as published: 60 layers, 128 heads of 128, MLA caching a 512-wide
/// latent plus a 64-wide decoupled RoPE key per token and layer (DeepSeek-AI, 2024).
const MLA_LAYERS: u64 = 60;
const MLA_HEADS: u64 = 128;
const MLA_HEAD_DIM: u64 = 128;
const MLA_LATENT: u64 = 512;
const MLA_ROPE: u64 = 64;
/// Mistral-7B's sliding window (Jiang et al., 2023), on the llama3-8b shape.
const WINDOW: u64 = 4096;
const LONG: u64 = 32_768;

/// KV per token and per long request for the attention variants, fp16, by their formulas.
pub fn attention_variants() -> Result<String> {
    let l3 = LlamaConfig::named("llama3-8b")?;
    let l2 = LlamaConfig::named("llama-7b")?;
    let mqa = LlamaConfig { num_key_value_heads: 1, ..l3.clone() };
    let fp16 = Precision::F16;
    let mut rows: Vec<(String, String, u64, u64)> = Vec::new();
    let full = |c: &LlamaConfig| kv_bytes_per_token(c, fp16);
    rows.push(("MHA: `llama-7b` (32 KV heads)".into(), "2 × layers × heads × head_dim × 2 B".into(), full(&l2), LONG));
    rows.push(("GQA: `llama3-8b` (8 KV heads)".into(), "2 × layers × kv_heads × head_dim × 2 B".into(), full(&l3), LONG));
    rows.push(("MQA: `llama3-8b` with 1 KV head".into(), "2 × layers × 1 × head_dim × 2 B".into(), full(&mqa), LONG));
    rows.push((format!("sliding window of {}: `llama3-8b`", thousands(WINDOW)), "GQA per token; only the last window's tokens held".into(), full(&l3), LONG.min(WINDOW)));
    let mha_v2 = 2 * MLA_LAYERS * MLA_HEADS * MLA_HEAD_DIM * 2;
    rows.push(("DeepSeek-V2's shape with MHA (128 heads of 128)".into(), "2 × layers × heads × head_dim × 2 B".into(), mha_v2, LONG));
    let mla = MLA_LAYERS * (MLA_LATENT + MLA_ROPE) * 2;
    rows.push(("MLA: DeepSeek-V2 (latent 512 + RoPE key 64)".into(), "layers × (latent + rope_dim) × 2 B".into(), mla, LONG));
    let mut o = String::new();
    writeln!(o, "| attention | KV per token, formula (fp16) | KV per token | tokens held of a {}-token request | KV of that request |", thousands(LONG))?;
    writeln!(o, "|---|---|---:|---:|---:|")?;
    for (name, formula, per_token, held) in rows {
        writeln!(o, "| {name} | {formula} | {} | {} | {} |", kib(per_token), thousands(held), gib(per_token * held))?;
    }
    writeln!(o, "\nShapes: `LlamaConfig::named` for the Llama rows; DeepSeek-V2's published dimensions (60 layers, 128 heads of 128, a 512-wide latent and a 64-wide RoPE key) for the last two. MLA caches one latent vector per token and layer, shared by all heads, instead of a K and a V per head.")?;
    Ok(o)
}

/// Expected distinct experts one MoE layer runs in a decode step of `batch` tokens, each routed
/// to `top_k` of `experts` uniformly and independently: E × (1 − (1 − k/E)^B).
pub fn experts_touched(experts: u64, top_k: u64, batch: u64) -> f64 {
    let e = experts as f64;
    e * (1.0 - (1.0 - top_k as f64 / e).powi(batch as i32))
}

/// Experts (and so expert weights) a decode step reads as the batch grows.
pub fn moe_experts() -> String {
    let models = [("Mixtral-8x7B", 8u64, 2u64), ("DeepSeek-V3", 256, 8)];
    let mut o = String::from("| tokens in the step (batch B) |");
    for (name, e, k) in models {
        let _ = write!(o, " {name}: experts run of {e} (top-{k}) | share of its expert weights read |");
    }
    o.push_str("\n|---:|");
    o.push_str(&"---:|---:|".repeat(models.len()));
    o.push('\n');
    for b in [1u64, 2, 4, 8, 16, 64, 256] {
        let _ = write!(o, "| {b} |");
        for (_, e, k) in models {
            let t = experts_touched(e, k, b);
            let _ = write!(o, " {t:.1} | {:.0}% |", 100.0 * t / e as f64);
        }
        o.push('\n');
    }
    o.push_str("\nPer MoE layer, with every token routed to its top-k experts uniformly and independently (real routers are skewed, so fewer distinct experts run). The KV cache is untouched by MoE: it belongs to attention, which every token runs in full.\n");
    o
}

fn kib(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

fn gib(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms() {
        assert!((expected_tokens(0.8, 4) - (1.0 - 0.8f64.powi(5)) / 0.2).abs() < 1e-12);
        assert_eq!(expected_tokens(0.0, 8), 1.0);
        assert!((experts_touched(8, 2, 1) - 2.0).abs() < 1e-12);
        assert!(experts_touched(256, 8, 256) > 250.0);
    }

    #[test]
    fn speculation_pays_at_batch_1_and_not_at_1024() {
        let i = Inputs::default();
        let c = LlamaConfig::named(SPEC_MODEL).unwrap();
        let e = expected_tokens(SPEC_ALPHA, SPEC_K);
        let gain = |b| e * step_floor_s(&c, b, 1, SPEC_CONTEXT, &i) / step_floor_s(&c, b, SPEC_K as u64 + 1, SPEC_CONTEXT, &i);
        assert!(gain(1) > 3.0, "{}", gain(1));
        assert!(gain(1024) < 1.0, "{}", gain(1024));
    }
}
