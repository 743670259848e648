//! Writes a random model of a named shape as a Hugging Face directory (config.json +
//! model.safetensors, f32), for comparisons with other engines on the same weights.
//!
//! cargo run --release -p ch00-model --example save_random -- peer-76m DIR [seed]

use ch00_model::{DType, LlamaConfig, Model};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(name), Some(dir)) = (args.first(), args.get(1)) else {
        return Err("usage: save_random CONFIG DIR [seed]".into());
    };
    let seed: u64 = args.get(2).map_or(Ok(0), |s| s.parse())?;
    let model = Model::random(LlamaConfig::named(name)?, seed)?;
    model.save(&PathBuf::from(dir), DType::F32)?;
    println!("{name} ({} parameters, f32) written to {dir}", model.config.param_count());
    Ok(())
}
