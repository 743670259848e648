//! The parallel-sampling report as Markdown tables.

use crate::sampling::result::SamplingReport;
use crate::units::human_bytes;
use std::fmt::Write;

/// The report as Markdown tables.
pub fn to_markdown(r: &SamplingReport) -> String {
    let mut out = String::new();
    let opt = |x: Option<f64>, digits: usize| x.map_or("—".to_string(), |v| format!("{v:.digits$}"));
    let runs = r.real.iter().map(|run| ("Real run (CPU)", run)).chain(r.accounting.iter().map(|run| ("Accounting run", run)));
    for (kind, run) in runs {
        let _ = writeln!(
            out,
            "### {kind}: {} prompts × {} samples, {}\n\nKV budget {} = {} blocks of {} tokens.{}\n",
            run.prompts,
            run.n,
            run.model,
            human_bytes(run.budget_bytes),
            run.num_blocks,
            run.block_size,
            match run.same_tokens {
                Some(true) => " Every design produced exactly the independent requests' tokens.",
                Some(false) => " **The designs produced different tokens.**",
                None => "",
            }
        );
        let _ = writeln!(out, "| design | peak blocks used | peak running | mean running | mean running while queued | copies | preemptions | steps | tokens/s |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for d in &run.designs {
            let blocks = d.peak_blocks_used.map_or("—".to_string(), |b| b.to_string());
            let _ = writeln!(
                out,
                "| {} | {blocks} | {} | {:.1} | {} | {} | {} | {} | {} |",
                d.design,
                d.peak_running,
                d.mean_running,
                opt(d.mean_running_queued, 1),
                d.cow_copies,
                d.preemptions,
                d.steps,
                opt(d.tokens_per_s, 1)
            );
        }
        out.push('\n');
    }
    out
}
