//! candle's Llama (candle-transformers, f32, CPU) on a Hugging Face checkpoint directory: greedy
//! decoding from the given token ids with candle's own KV cache. Only the decode steps are timed
//! (the prefill gives the first token), as `kvserve generate` reports its decode rate.
//!
//! usage: peer-candle DIR MAX_NEW_TOKENS ID [ID ...]
//! prints: `ids: <generated ids>` and `decode_tokens_per_s: <rate>`

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama::{Cache, Llama, LlamaConfig};
use std::path::Path;
use std::time::Instant;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, max_new, ids @ ..] = args.as_slice() else { bail!("usage: peer-candle DIR MAX_NEW_TOKENS ID [ID ...]") };
    let (dir, max_new): (&Path, usize) = (Path::new(dir), max_new.parse().context("MAX_NEW_TOKENS")?);
    let prompt = ids.iter().map(|s| s.parse::<u32>().context("token id")).collect::<Result<Vec<_>>>()?;
    if prompt.is_empty() || max_new == 0 {
        bail!("need at least one prompt token and one new token");
    }

    let text = std::fs::read_to_string(dir.join("config.json")).context("reading config.json")?;
    let config = serde_json::from_str::<LlamaConfig>(&text)?.into_config(false);
    let device = Device::Cpu;
    // SAFETY: the file is not modified while it is mapped (candle copies the tensors out of it).
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &device)? };
    let model = Llama::load(vb, &config)?;
    let mut cache = Cache::new(true, DType::F32, &config, &device)?;

    let greedy = |logits: &Tensor| -> Result<u32> { Ok(logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?) };
    let input = Tensor::new(prompt.as_slice(), &device)?.unsqueeze(0)?; // (1, prompt)
    let mut tokens = vec![greedy(&model.forward(&input, 0, &mut cache)?)?];
    let start = Instant::now();
    while tokens.len() < max_new {
        let pos = prompt.len() + tokens.len() - 1;
        let input = Tensor::new(&[tokens[tokens.len() - 1]], &device)?.unsqueeze(0)?; // (1, 1)
        tokens.push(greedy(&model.forward(&input, pos, &mut cache)?)?);
    }
    let secs = start.elapsed().as_secs_f64();
    println!("ids: {}", tokens.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" "));
    println!("decode_tokens_per_s: {:.2}", (tokens.len() - 1) as f64 / secs);
    Ok(())
}
