//! Prompt processing on the CPU, measured as llama.cpp's `llama-bench -p N` measures it: one step
//! of N prompt tokens into chapter 2's KV cache, logits for the last token only, repeated.
//! Prints the median and the fastest rate.
//!
//! cargo run --release --example prefill_rate -- MODEL_DIR [tokens, default 512] [repetitions, default 5]
//!
//! Threads: rayon's (`RAYON_NUM_THREADS`, default all cores). `scripts/peer_llamacpp.sh` runs it.

use ch02_kv_cache::{ContiguousBackend, KvCache};
use kvserve::ch00_model::{Model, StepMeta};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else { anyhow::bail!("usage: prefill_rate MODEL_DIR [tokens] [repetitions]") };
    let tokens: usize = args.get(1).map_or(Ok(512), |s| s.parse())?;
    let reps: usize = args.get(2).map_or(Ok(5), |s| s.parse())?;
    anyhow::ensure!(tokens > 0 && reps > 0, "tokens and repetitions must be positive");
    let model = Model::load(std::path::Path::new(dir))?;
    let vocab = model.config.vocab_size;
    let prompt: Vec<u32> = (0..tokens).map(|i| ((i * 7 + 1) % vocab) as u32).collect(); // (tokens)
    let meta = StepMeta::span(0, 0, tokens);
    let mut rates = Vec::with_capacity(reps);
    // One cache for every repetition (each prefill overwrites positions 0..tokens), as llama-bench
    // keeps its context; one untimed step first: page faults are not prompt processing.
    let mut backend = ContiguousBackend { slots: vec![KvCache::new(&model.config, tokens)] };
    for rep in 0..=reps {
        let start = Instant::now();
        let logits = model.forward(&prompt, &meta, &[tokens - 1], &mut backend)?; // (1, vocab)
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(logits);
        if rep > 0 {
            rates.push(tokens as f64 / secs);
        }
    }
    rates.sort_by(f64::total_cmp);
    println!("prefill_tokens: {tokens}");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("threads: {}", std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| cores.to_string()));
    println!("prefill_tokens_per_s_median: {:.1}", rates[rates.len() / 2]);
    println!("prefill_tokens_per_s_best: {:.1}", rates[rates.len() - 1]);
    Ok(())
}
