//! The prefill half of serving from the command line: `kvserve bench-chunked` (chunked prefill on
//! a mixed workload, with and without chunking, over a sweep of token budgets) and
//! `kvserve bench-chat` (the prefix cache across the turns of multi-turn chats, on and off).

use crate::machine::{command_line, machine};
use anyhow::{Context, Result};
use bookgen::chat::{self, ChatSpec};
use bookgen::chunked::{run as run_mixed, to_markdown, MixedSpec};
use ch05_paged_attention::PagedEngine;
use kvserve::ch00_model::{load_model, DType, LlamaConfig};
use kvserve::ch00_serving::{Engine, Request, RunOptions};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct ChunkedArgs {
    /// Named random model (the bench model's context is 1024 tokens; on the GPU, e.g. llama-7b).
    #[arg(long, default_value = "bench")]
    config: String,
    /// ch05 (the CPU engine, the book's workload) or ch06 (the GPU engine, random f16 weights
    /// made on the card, a workload sized for a 7B model on one GPU).
    #[arg(long, default_value = "ch05")]
    stage: String,
    /// Token budgets (`max_num_batched_tokens`) of the chunked runs.
    #[arg(long, value_delimiter = ',', default_value = "64,128,256,512")]
    budgets: Vec<usize>,
    /// Rounds; each runs every setting once, in turn, and the table shows the medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also write the table as Markdown here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also draw the budget sweep (ITL p99 and throughput against the budget) as this SVG file.
    #[arg(long)]
    figure: Option<PathBuf>,
}

pub fn run(args: &ChunkedArgs) -> Result<()> {
    let machine = machine();
    let opts = RunOptions::default();
    let (report, source) = if args.stage.starts_with("ch06") {
        let config = LlamaConfig::named(&args.config)?;
        let run_one = |paged: &PagedEngine, reqs: &[Request]| {
            let mut e = ch06_cuda::CudaEngine { paged: paged.clone(), ..Default::default() };
            Ok(e.run_random(&config, 0, reqs, &opts)?)
        };
        (run_mixed(&config, &MixedSpec::gpu_7b(), &args.budgets, args.rounds, run_one)?, format!("random:{} f16, ch06", args.config))
    } else {
        let loaded = load_model(None, Some(&args.config))?;
        let run_one = |paged: &PagedEngine, reqs: &[Request]| Ok(paged.clone().run(&loaded.model, reqs, &opts)?);
        (run_mixed(&loaded.model.config, &MixedSpec::book(), &args.budgets, args.rounds, run_one)?, loaded.source_name())
    };
    let md = to_markdown(&report, &machine, &command_line());
    write_report(&md, &report, args.markdown.as_deref(), args.json.as_deref())?;
    if let Some(p) = &args.figure {
        let title = format!("chunked prefill: the token budget's trade-off ({source})");
        std::fs::write(p, bookgen::figures::budget_sweep_svg(&report, &title)?)?;
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ChatArgs {
    /// Named random model (the bench model's context is 1024 tokens; on the GPU, e.g. llama-7b).
    #[arg(long, default_value = "bench")]
    config: String,
    /// ch05 (the CPU engine, the book's chats) or ch06 (the GPU engine, random f16 weights made on
    /// the card, chats sized for a 7B model on one GPU).
    #[arg(long, default_value = "ch05")]
    stage: String,
    /// ch06: the element type (f16, bf16 or f32; f32 makes cache-on and cache-off answers equal).
    #[arg(long, default_value = "f16")]
    dtype: String,
    /// Also write the table as Markdown here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run_chat(args: &ChatArgs) -> Result<()> {
    let machine = machine();
    let (report, engine) = if args.stage.starts_with("ch06") {
        let config = LlamaConfig::named(&args.config)?;
        let spec = ChatSpec::gpu_7b();
        let dtype = DType::parse(&args.dtype).with_context(|| format!("--dtype {}: f16, bf16 or f32", args.dtype))?;
        let core = |paged: PagedEngine| {
            Ok(ch06_cuda::CudaEngine { paged, dtype: Some(dtype), ..Default::default() }.stepper_random(&config, 0)?)
        };
        let report = chat::run(&config, &spec, spec.conversations, core)?;
        let what = format!("random:{} {} weights made on the card", args.config, args.dtype);
        (report, format!("Chapter 6's engine on {what} (the KV pool fills the card, {} sequences at most)", spec.conversations))
    } else {
        let loaded = load_model(None, Some(&args.config))?;
        let core = |paged: PagedEngine| Ok(paged.stepper(&loaded.model)?);
        let report = chat::run(&loaded.model.config, &ChatSpec::book(), 16, core)?;
        (report, "Chapter 5's engine (the memory of 16 slots, 16 sequences at most)".to_string())
    };
    let md = chat::to_markdown(&report, &engine, &machine, &command_line());
    write_report(&md, &report, args.markdown.as_deref(), args.json.as_deref())
}

/// Prints the table, and writes it and the report's JSON where asked.
fn write_report(md: &str, report: &impl serde::Serialize, markdown: Option<&Path>, json: Option<&Path>) -> Result<()> {
    println!("{md}");
    if let Some(p) = markdown {
        std::fs::write(p, md)?;
    }
    if let Some(p) = json {
        std::fs::write(p, serde_json::to_string_pretty(report)?)?;
    }
    Ok(())
}
