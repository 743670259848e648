//! The capacity report as Markdown: the tables `kvserve bench` prints and the book quotes, and
//! the claims of chapter 5 as sentences with the report's numbers.

use crate::capacity::result::{CapacityReport, CapacityRun};
use crate::units::human_bytes;

fn run_table(out: &mut String, title: &str, run: &CapacityRun) {
    use std::fmt::Write;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let _ = writeln!(
        out,
        "### {title}\n\n{} ({}, {} bytes/token), KV budget {} = {} slots of {} tokens = {} blocks of {} tokens, {} requests\n",
        run.model,
        run.dtype,
        run.kv_bytes_per_token,
        human_bytes(run.budget_bytes),
        run.num_slots,
        run.max_len,
        run.num_blocks,
        run.block_size,
        run.n_requests
    );
    let _ = writeln!(out, "| design | peak running | mean running | mean running while queued | KV reserved (mean) | KV holding tokens (mean) | waste | preemptions | steps | tokens/s |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, d) in [("ch04 contiguous slots", &run.contiguous), ("ch05 paged blocks", &run.paged)] {
        let tps = d.tokens_per_s.map_or("—".to_string(), |t| format!("{t:.1}"));
        let _ = writeln!(
            out,
            "| {name} | {} | {:.1} | {:.1} | {:.1} MiB | {:.1} MiB | {:.1}% | {} | {} | {tps} |",
            d.peak_running,
            d.mean_running,
            d.mean_running_queued,
            mib(d.kv_bytes_allocated),
            mib(d.kv_bytes_used),
            d.waste_pct,
            d.preemptions,
            d.steps
        );
    }
    let _ = writeln!(
        out,
        "\nPaged / contiguous: {:.2}× peak concurrent requests, {:.2}× mean running batch, {:.2}× while requests queued.\n",
        run.concurrency_ratio, run.mean_running_ratio, run.queued_running_ratio
    );
}

/// The report as Markdown tables (what `kvserve bench` prints and the book quotes).
pub fn to_markdown(r: &CapacityReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if let Some(real) = &r.real {
        run_table(&mut out, "Real run (CPU)", real);
    }
    run_table(&mut out, "Accounting run (no model compute)", &r.accounting);
    if let Some(p) = &r.prefix_sharing {
        let _ = writeln!(
            out,
            "### Prefix sharing (accounting run, every prompt after the same {}-token system prompt)\n",
            p.system_prompt_tokens
        );
        let _ = writeln!(out, "| design | mean running while queued |");
        let _ = writeln!(out, "|---|---:|");
        let _ = writeln!(out, "| ch04 contiguous slots | {:.1} |", p.contiguous_running_queued);
        let _ = writeln!(out, "| ch05 paged blocks | {:.1} |", p.paged_running_queued);
        let _ = writeln!(out, "| ch05 paged blocks + prefix sharing | {:.1} |", p.shared_running_queued);
        let _ = writeln!(
            out,
            "\nPrefix-cache hit rate: {:.1}% of admitted prompt tokens; {} preemptions with sharing.\n",
            100.0 * p.hit_rate,
            p.shared_preemptions
        );
    }
    if !r.block_sizes.is_empty() {
        let _ = writeln!(out, "### Block size (accounting run)\n");
        let _ = writeln!(out, "| block size | blocks | peak running | mean running | mean running while queued | waste | preemptions | steps |");
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|");
        for b in &r.block_sizes {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {:.1} | {:.1}% | {} | {} |",
                b.block_size,
                b.num_blocks,
                b.peak_running,
                b.mean_running,
                b.mean_running_queued,
                b.waste_pct,
                b.preemptions,
                b.steps
            );
        }
    }
    out
}

/// The claims chapter 5 tests, as sentences with the numbers of this report.
pub fn claims_markdown(r: &CapacityReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let a = &r.accounting;
    let (c, p) = (&a.contiguous, &a.paged);
    let _ = writeln!(
        out,
        "- **More concurrent requests in the same memory** (what paging changes directly, and a property of the workload: about max_len over the mean sequence length when memory is the limit; the vLLM paper's 2–4× is a throughput gain at equal latency, against FasterTransformer and Orca). In the {} accounting run, while requests queued — memory, not demand, the limit — chapter 4 ran {:.1} requests on average and chapter 5 ran {:.1}: **{:.2}×**. Over the whole run, drain included, the mean running batch is {:.2}× larger; at the peak, {} against {} ({:.2}×).",
        a.model, c.mean_running_queued, p.mean_running_queued, a.queued_running_ratio, a.mean_running_ratio, p.peak_running, c.peak_running, a.concurrency_ratio
    );
    let _ = writeln!(
        out,
        "- **KV memory holding tokens** (the vLLM paper measured 20–38% for systems that reserve the maximum length). Chapter 4's slots held tokens in **{:.1}%** of the memory they reserved; chapter 5's blocks in **{:.1}%** — {:.1}% waste, with {} preemptions for {} requests.",
        100.0 - c.waste_pct, 100.0 - p.waste_pct, p.waste_pct, p.preemptions, a.n_requests
    );
    if let Some(x) = &r.prefix_sharing {
        let _ = writeln!(
            out,
            "- **Prefix sharing.** With the same {}-token system prompt ahead of every prompt, the requests running while others queued were {:.1} in slots, {:.1} in blocks, and **{:.1}** in blocks with prefix sharing; the prefix cache served {:.1}% of all admitted prompt tokens.",
            x.system_prompt_tokens, x.contiguous_running_queued, x.paged_running_queued, x.shared_running_queued, 100.0 * x.hit_rate
        );
    }
    if let Some(real) = &r.real {
        let (c, p) = (&real.contiguous, &real.paged);
        let tps = match (c.tokens_per_s, p.tokens_per_s) {
            (Some(ct), Some(pt)) => format!("; throughput {pt:.1} against {ct:.1} tokens/s ({:.2}×)", pt / ct),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "- **On the CPU ({}, {} requests).** {:.1} against {:.1} requests running while others queued ({:.2}×); {:.1}% against {:.1}% waste; {} preemptions{tps}.",
            real.model, real.n_requests, p.mean_running_queued, c.mean_running_queued, real.queued_running_ratio, p.waste_pct, c.waste_pct, p.preemptions
        );
    }
    out
}
