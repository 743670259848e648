//! Writes a random model of a named shape as a Hugging Face directory (config.json +
//! model.safetensors, f32 unless a weight type is given), for comparisons with other engines on
//! the same weights.
//!
//! cargo run --release -p ch00-model --example save_random -- peer-76m DIR [seed] [f32|f16|bf16]

use ch00_model::{DType, LlamaConfig, Model};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(name), Some(dir)) = (args.first(), args.get(1)) else {
        return Err("usage: save_random CONFIG DIR [seed] [f32|f16|bf16]".into());
    };
    let seed: u64 = args.get(2).map_or(Ok(0), |s| s.parse())?;
    let dtype_name = args.get(3).map_or("f32", String::as_str);
    let dtype = DType::parse(dtype_name).ok_or_else(|| format!("unknown weight type {dtype_name:?}: f32, f16 or bf16"))?;
    let model = Model::random(LlamaConfig::named(name)?, seed)?;
    model.save(&PathBuf::from(dir), dtype)?;
    println!("{name} ({} parameters, {dtype_name}) written to {dir}", model.config.param_count());
    Ok(())
}
