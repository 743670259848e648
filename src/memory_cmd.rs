//! `kvserve memory`: the KV-cache memory calculator, with exact units (the report is bookgen's).

use anyhow::{bail, Result};
use bookgen::memory::{self, MemoryQuery};
use kvserve::ch00_model::{DType, LlamaConfig};
use std::fmt::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct MemoryArgs {
    /// A Hugging Face model directory to read config.json from.
    #[arg(long, conflicts_with = "config")]
    pub model: Option<PathBuf>,
    /// A named shape: llama-7b (default), llama3-8b, llama3-70b, bench, tiny.
    #[arg(long)]
    pub config: Option<String>,
    /// Requests held at once.
    #[arg(long, default_value_t = 16)]
    pub batch: u64,
    /// Tokens per request (prompt + output).
    #[arg(long, default_value_t = 2048)]
    pub seq_len: u64,
    /// KV-cache (and weight) element type: f16, bf16 or f32.
    #[arg(long, default_value = "f16")]
    pub dtype: String,
    /// GPU memory in MiB, as nvidia-smi reports it (an "80 GB" H100: 81559 MiB; an H200: 143771).
    #[arg(long, default_value_t = 81_559.0)]
    pub gpu_mib: f64,
    /// Activation / workspace reserve in GB, low and high estimate.
    #[arg(long, num_args = 2, default_values_t = [2.0, 4.0])]
    pub activations_gb: Vec<f64>,
    /// Write the report as Markdown to this file too.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

pub fn run(args: &MemoryArgs) -> Result<()> {
    let text = report(args)?;
    print!("{text}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, format!("```text\n$ kvserve memory{}\n{text}```\n", flags(args)))?;
    }
    Ok(())
}

fn flags(args: &MemoryArgs) -> String {
    let mut s = String::new();
    if let Some(c) = &args.config {
        let _ = write!(s, " --config {c}");
    }
    if args.batch != 16 || args.seq_len != 2048 {
        let _ = write!(s, " --batch {} --seq-len {}", args.batch, args.seq_len);
    }
    s
}

fn report(args: &MemoryArgs) -> Result<String> {
    let Some(dtype) = DType::parse(&args.dtype) else { bail!("unknown dtype {:?}: use f16, bf16 or f32", args.dtype) };
    let query = MemoryQuery {
        dtype,
        batch: args.batch,
        seq_len: args.seq_len,
        gpu_mib: args.gpu_mib,
        activations_gb: (args.activations_gb[0], args.activations_gb[1]),
    };
    query.validate()?;
    let (config, name) = match (&args.model, &args.config) {
        (Some(dir), _) => (LlamaConfig::from_file(&dir.join("config.json"))?, dir.display().to_string()),
        (None, c) => {
            let n = c.clone().unwrap_or_else(|| "llama-7b".into());
            (LlamaConfig::named(&n)?, n)
        }
    };
    memory::report(&name, &config, &query)
}
