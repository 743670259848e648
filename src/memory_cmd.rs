//! `kvserve memory`: the KV-cache memory calculator, with exact units (the report is bookgen's).

use anyhow::{bail, Result};
use bookgen::memory::{self, MemoryQuery};
use kvserve::ch00_model::{LlamaConfig, Precision};
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
    /// KV-cache and weight element type: f16, bf16 or f32 (and, for sizing only, fp8, int8, int4).
    #[arg(long, default_value = "f16")]
    pub dtype: String,
    /// The KV cache's element type, if not --dtype: e.g. fp8 or int8 (scales not counted).
    #[arg(long)]
    pub kv_dtype: Option<String>,
    /// The weights' element type, if not --dtype: e.g. fp8, int8 or int4 (scales not counted).
    #[arg(long)]
    pub weight_dtype: Option<String>,
    /// GPU memory in MiB, as nvidia-smi reports it (an "80 GB" H100: 81559 MiB; an H200: 143771).
    #[arg(long, default_value_t = kvserve::ch00_model::H100_80GB.mib as f64)]
    pub gpu_mib: f64,
    /// Activation / workspace reserve in GB, low and high estimate.
    #[arg(long, num_args = 2, default_values_t = [2.0, 4.0])]
    pub activations_gb: Vec<f64>,
    /// Print the table of weight × KV precisions (fp16, fp8, int4, int2) on this card instead.
    #[arg(long)]
    pub precisions: bool,
    /// Write the report as Markdown to this file too.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

pub fn run(args: &MemoryArgs) -> Result<()> {
    let text = report(args)?;
    print!("{text}");
    if let Some(path) = &args.markdown {
        let page = if args.precisions {
            // already a Markdown table: the command goes below it
            format!("{text}\n*Computed, not measured (the same on every machine), by `kvserve memory{}`.*\n", flags(args))
        } else {
            format!("```text\n$ kvserve memory{}\n{text}```\n", flags(args))
        };
        std::fs::write(path, page)?;
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
    if args.dtype != "f16" {
        let _ = write!(s, " --dtype {}", args.dtype);
    }
    if let Some(w) = &args.weight_dtype {
        let _ = write!(s, " --weight-dtype {w}");
    }
    if let Some(k) = &args.kv_dtype {
        let _ = write!(s, " --kv-dtype {k}");
    }
    if args.gpu_mib != kvserve::ch00_model::H100_80GB.mib as f64 {
        let _ = write!(s, " --gpu-mib {}", args.gpu_mib);
    }
    if args.precisions {
        s.push_str(" --precisions");
    }
    s
}

fn report(args: &MemoryArgs) -> Result<String> {
    let parse = |flag: &str, s: &str| match Precision::parse(s) {
        Some(p) => Ok(p),
        None => bail!("unknown dtype {s:?} for {flag}: use f32, f16, bf16, fp8, int8 or int4"),
    };
    let dtype = parse("--dtype", &args.dtype)?;
    let query = MemoryQuery {
        weights: args.weight_dtype.as_deref().map(|s| parse("--weight-dtype", s)).transpose()?.unwrap_or(dtype),
        kv: args.kv_dtype.as_deref().map(|s| parse("--kv-dtype", s)).transpose()?.unwrap_or(dtype),
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
    if args.precisions {
        return memory::precision_table(&name, &config, &query);
    }
    memory::report(&name, &config, &query)
}
