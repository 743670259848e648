//! Chapter 6's engine on a checkpoint, the way a server starts: load the weights, profile one
//! pass, fill `--gpu-memory-utilization` of the card with KV blocks, report the pool, generate.
//!
//!   cargo run --release -p ch06-cuda --example generate -- [--model DIR] [--dtype f16|bf16|f32]
//!       [--gpu-memory-utilization 0.9] [--no-cuda-graphs] [--max-new-tokens 64] "prompt"
//!
//! Without an NVIDIA GPU it stops with a clear error.

use ch00_model::{load_model, DType, SamplingParams};
use ch00_serving::generate::complete;
use ch06_cuda::CudaEngine;
use std::path::PathBuf;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut model, mut prompt, mut max_new) = (None, None, 64usize);
    let mut e = CudaEngine::default();
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--model" => model = Some(PathBuf::from(value("--model")?)),
            "--dtype" => {
                let v = value("--dtype")?;
                e.dtype = Some(DType::parse(&v).ok_or_else(|| format!("unknown dtype {v:?}; use f16, bf16 or f32"))?);
            }
            "--gpu-memory-utilization" => e.gpu_memory_utilization = value("--gpu-memory-utilization")?.parse()?,
            "--no-cuda-graphs" => e.cuda_graphs = false,
            "--max-new-tokens" => max_new = value("--max-new-tokens")?.parse()?,
            _ if a.starts_with("--") => return Err(format!("unknown flag {a}").into()),
            _ => prompt = Some(a),
        }
    }
    let loaded = load_model(model.as_deref(), None)?;
    let prompt = prompt.unwrap_or_else(|| "ROMEO:".into());
    let (mut texts, run) = complete(&mut e, &loaded, &prompt, max_new, SamplingParams::greedy(), 1)?;
    let text = texts.swap_remove(0);
    if let Some(s) = &e.last_setup {
        println!(
            "{} ({}): weights {:.2} GiB; KV pool {} blocks of {} tokens = {:.2} GiB; at most {} tokens at once",
            s.device,
            s.dtype,
            s.weight_bytes as f64 / GIB,
            s.num_blocks,
            s.block_size,
            s.kv_bytes as f64 / GIB,
            s.max_concurrent_tokens
        );
    }
    println!("{text}");
    println!("[{} tokens in {:.3} s]", run.stats.generated_tokens, run.stats.wall_s);
    Ok(())
}

const GIB: f64 = (1u64 << 30) as f64;
