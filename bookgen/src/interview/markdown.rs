//! The interview pages' Markdown: the cheat sheet's and the mock interview's tables, each file
//! ending with the command that wrote it.

use crate::capacity::run::accounting_run;
use crate::capacity::spec::AccountingSpec;
use crate::interview::inputs::Inputs;
use crate::interview::sizing::{
    decode_floor_ms, f16_config, layouts, mock_lengths, mock_workload, per_card, prefill_floor_ms, Layout, GB, TP,
};
use anyhow::Result;
use crate::card::card_budget;
use ch00_model::{DType, MemoryPlan, Precision, GPU_MEMORY_UTILIZATION};
use crate::units::thousands;
use std::fmt::Write;

const KIB: f64 = 1024.0;

/// Every file of the interview pages: (file name in `book/src/generated`, Markdown).
pub fn files(inputs: &Inputs) -> Result<Vec<(&'static str, String)>> {
    inputs.validate()?;
    let files = [
        ("card-7b.md", crate::card::seven_b().markdown(&[2048, 8192])),
        ("capacity-max-len.md", crate::capacity::sweep::sweep_markdown(&[2048, 4096, 8192, 16384])?),
        ("spec-acceptance.md", crate::topics::acceptance_table()),
        ("spec-batch.md", crate::topics::speculation_by_batch(inputs)?),
        ("attention-variants.md", crate::topics::attention_variants()?),
        ("moe-experts.md", crate::topics::moe_experts()),
        ("cheatsheet-memory.md", cheatsheet_memory(inputs)?),
        ("cheatsheet-batching.md", cheatsheet_batching()),
        ("cheatsheet-paging.md", cheatsheet_paging()?),
        ("cheatsheet-roofline.md", cheatsheet_roofline(inputs)?),
        ("mock-inputs.md", mock_inputs(inputs)?),
        ("mock-per-card.md", mock_per_card(inputs)?),
        ("mock-designs.md", mock_designs(inputs, inputs.tpot_ms)?),
        ("mock-designs-tight.md", mock_designs(inputs, inputs.tight_tpot_ms)?),
        ("mock-static.md", mock_static(inputs)?),
        ("mock-compute.md", mock_compute(inputs)?),
    ];
    Ok(files.into_iter().map(|(name, text)| (name, format!("{text}\n{}", footer(inputs)))).collect())
}

/// The command line that produced the files, with every input that differs from the default.
fn footer(i: &Inputs) -> String {
    let d = Inputs::default();
    let mut flags = String::new();
    for (flag, v, dv) in [
        ("--users", i.users as f64, d.users as f64),
        ("--gpu-mib", i.gpu_mib, d.gpu_mib),
        ("--bandwidth-tbs", i.bandwidth_tbs, d.bandwidth_tbs),
        ("--tflops", i.tflops, d.tflops),
        ("--tpot-ms", i.tpot_ms, d.tpot_ms),
        ("--tight-tpot-ms", i.tight_tpot_ms, d.tight_tpot_ms),
        ("--ttft-ms", i.ttft_ms, d.ttft_ms),
        ("--fp8-tflops", i.fp8_tflops, d.fp8_tflops),
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

/// The card's memory as `nvidia-smi` prints it, with the decimal figure: "81,559 MiB (85.5 GB)".
fn card_size(i: &Inputs) -> String {
    format!("{} MiB ({})", thousands(i.gpu_mib.round() as u64), gb(i.gpu_bytes()))
}

fn kib(b: u64) -> String {
    format!("{:.0} KiB", b as f64 / KIB)
}

fn gb(b: u64) -> String {
    format!("{:.1} GB", b as f64 / GB)
}


/// Bytes per token, per request and weights for the real shapes, and what fits on one card by
/// the book's card model (`crate::card`).
fn cheatsheet_memory(i: &Inputs) -> Result<String> {
    let mut o = String::new();
    let len = i.max_len as u64;
    let card = i.card();
    writeln!(o, "| shape (fp16) | layers | query / KV heads | head_dim | KV per token | KV per {}-token request | weights | KV budget on one {} card | {}-token requests in it |", thousands(len), card_size(i), thousands(len))?;
    writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for name in ["llama-7b", "llama3-8b", "llama3-70b"] {
        let (c, weights) = f16_config(name)?;
        let b = card_budget(card, name, &c, Precision::F16, Precision::F16, i.max_len);
        let plan = MemoryPlan::new(&c, DType::F16, 1, len, weights, (0, 0), card.bytes())?;
        let (budget, fit) = if b.kv_budget == 0 {
            ("none".to_string(), "none: the weights alone do not fit".to_string())
        } else {
            (format!("{:.1} GiB", b.kv_budget as f64 / (1u64 << 30) as f64), b.requests(len).to_string())
        };
        writeln!(
            o,
            "| `{name}` | {} | {} / {} | {} | {} | {} | {} | {budget} | {fit} |",
            c.num_hidden_layers,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
            kib(plan.per_token),
            gb(plan.per_request),
            gb(weights),
        )?;
    }
    writeln!(o, "\nThe KV budget is the book's card model (appendix A): {GPU_MEMORY_UTILIZATION} of the card, minus the weights and chapter 6's buffers; requests are reserved for all {} tokens.", thousands(len))?;
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
    writeln!(o, "| design ({} shape, KV budget {:.1} GiB, {} requests) | KV reserved that holds no token | requests running while others wait |", spec.shape.name, run.budget_bytes as f64 / (1u64 << 30) as f64, run.n_requests)?;
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

fn mock_inputs(i: &Inputs) -> Result<String> {
    let (c, weights) = f16_config("llama3-70b")?;
    let (prompt, total) = mock_lengths(i, c.vocab_size);
    let mut o = String::from("| input | value |\n|---|---|\n");
    writeln!(o, "| model | `llama3-70b` shape: {} layers, {} query heads, {} KV heads × head_dim {}, {} parameters |", c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim, thousands(c.param_count()))?;
    writeln!(o, "| weights and KV cache | fp16/bf16 (2 bytes): weights {} |", gb(weights))?;
    writeln!(o, "| users | {} concurrent, prompts uniform 512–2,048 tokens (mean {}), outputs exponential with mean 256 (mean request {} tokens), context capped at {} |", i.users, thousands(prompt.round() as u64), thousands(total.round() as u64), thousands(i.max_len as u64))?;
    writeln!(o, "| target | at most {:.0} ms per output token (TPOT) and {} ms to the first token (TTFT); the follow-up asks for {:.0} ms per token |", i.tpot_ms, thousands(i.ttft_ms.round() as u64), i.tight_tpot_ms)?;
    let mean_out = total - prompt;
    let rate = crate::interview::compute::arrival_rate(i, mean_out);
    writeln!(o, "| arrivals | each user sends a new request when the last one ends, so by Little's law λ = users ÷ (mean output × TPOT) = {} ÷ ({:.0} × {:.0} ms) = **{rate:.1} requests/s**, {} prompt tokens/s to prefill |", i.users, mean_out, i.tpot_ms, thousands((rate * prompt).round() as u64))?;
    writeln!(o, "| card | {} (the \"80 GB\" H100 SXM as `nvidia-smi` reports it), of which the engine takes {GPU_MEMORY_UTILIZATION} (the book's card model, appendix A): the KV budget of a card is that share minus its slice of the weights and chapter 6's buffers for that slice; {} TB/s memory bandwidth, {:.0} dense bf16 TFLOP/s, {:.0} dense FP8 TFLOP/s (datasheet figures) |", card_size(i), i.bandwidth_tbs, i.tflops, i.fp8_tflops)?;
    Ok(o)
}

fn mock_per_card(i: &Inputs) -> Result<String> {
    let (c, weights) = f16_config("llama3-70b")?;
    let (prompt, total) = mock_lengths(i, c.vocab_size);
    let mut o = String::new();
    writeln!(o, "| tensor parallel | weights per card | buffers per card | KV budget per card | KV per token per card | tokens held | blocks of 16 per card | {}-token slots | requests of {} tokens | decode floor, weights only | prefill floor, {}-token prompt |", thousands(i.max_len as u64), thousands(total.round() as u64), thousands(prompt.round() as u64))?;
    writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for tp in TP {
        let card = per_card(&c, weights, tp, i)?;
        if card.kv_budget == 0 {
            writeln!(o, "| {tp} | {} | {} | none: the weights do not fit | {} | — | — | — | — | — | — |", gb(card.weights), gb(card.buffers), kib(card.kv_per_token))?;
            continue;
        }
        writeln!(
            o,
            "| {tp} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} ms | {:.0} ms |",
            gb(card.weights),
            gb(card.buffers),
            gb(card.kv_budget),
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

/// Every step bounded by bytes and by FLOPs: fp16 and FP8, prefill in the decode steps or on
/// separate cards (`compute::designs`).
fn mock_compute(i: &Inputs) -> Result<String> {
    use crate::interview::compute::{designs, Prefill};
    let rows = designs(i)?;
    let mut o = String::new();
    writeln!(o, "| weights + KV | tensor parallel | prefill | requests a group holds | groups × batch | prompt tokens per step | bytes floor | compute floor | step floor | prefill cards | KV copied to decode | TTFT floor | cards | within {:.0} ms and {} ms? |", i.tpot_ms, thousands(i.ttft_ms.round() as u64))?;
    writeln!(o, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
    for d in &rows {
        let (prefill, copy) = match d.prefill {
            Prefill::Mixed => ("in the decode steps", "—".to_string()),
            Prefill::Disaggregated => ("on separate cards", format!("{:.1} GB/s", d.kv_copy_gb_s)),
        };
        let ms = |x: f64| if x.is_finite() { format!("{x:.1} ms") } else { "—".into() };
        let bold = |x: f64, bound: bool| if bound { format!("**{x:.1} ms**") } else { format!("{x:.1} ms") };
        writeln!(
            o,
            "| {} | {} | {prefill} | {} | {} × {} | {} | {} | {} | {} | {} | {copy} | {} | {} | {} |",
            d.dtype,
            d.tp,
            d.held,
            d.groups,
            d.batch,
            if d.prefill_tokens.is_finite() { thousands(d.prefill_tokens.round() as u64) } else { "—".into() },
            bold(d.bytes_ms, d.bytes_ms >= d.compute_ms),
            if d.compute_ms.is_finite() { bold(d.compute_ms, d.compute_ms > d.bytes_ms) } else { "none: prefill alone needs the group's whole peak".into() },
            ms(d.step_ms),
            if d.prefill_groups == 0 { "—".to_string() } else { format!("{} × {}", d.prefill_groups, d.tp) },
            ms(d.ttft_ms),
            d.cards(),
            if d.meets(i) { "yes" } else { "no" },
        )?;
    }
    let ok: Vec<_> = rows.iter().filter(|d| d.meets(i)).collect();
    match ok.iter().map(|d| d.cards()).min() {
        Some(fewest) => {
            let best: Vec<String> = ok
                .iter()
                .filter(|d| d.cards() == fewest)
                .map(|d| format!("{}, {}-way tensor parallel, prefill {}", d.dtype, d.tp, if d.prefill == Prefill::Mixed { "in the decode steps" } else { "on separate cards" }))
                .collect();
            writeln!(o, "\nFewest cards within both targets by both floors: **{fewest}** ({}).", best.join("; "))?;
        }
        None => writeln!(o, "\nNo design here meets both targets.")?,
    }
    writeln!(o, "\nThe bold floor is the one that binds. Requests held: the group's KV budget ÷ the KV of a mean-length request (the paged bound, no block waste). Groups: the fewest that memory allows; where those fail a target, the next row adds groups until both floors meet both targets. Prompt tokens per step: the arrival rate's prompt tokens per second for this group × the step floor (`step_floors`). Compute: 2 FLOPs per parameter per token (decodes + prompt tokens) ÷ (cards × peak); attention's own FLOPs are left out. Prefill cards: arrivals × mean prompt × 2 × parameters ÷ peak, rounded up to whole groups. KV copied: arrivals × one prompt's KV (all layers and heads), from the prefill to the decode cards. TTFT floor: one mean prompt's compute on its group, and in the decode steps at least one step; queueing is left out.")?;
    Ok(o)
}
