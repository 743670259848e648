//! Prints the logits of every position for fixed token ids, as JSON — the Rust half of the
//! Hugging Face parity check (`scripts/hf_check.py parity`).
//!
//! cargo run --release -p ch01-naive --example logits -- --model DIR --ids 1,2,3 --out logits.json

use ch00_model::{Model, StepMeta};
use ch01_naive::NoCache;
use std::path::PathBuf;

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let usage = "usage: logits --model DIR --ids 1,2,3 [--out FILE]";
    let dir = PathBuf::from(flag("--model").ok_or(usage)?);
    let ids: Vec<u32> = flag("--ids").ok_or(usage)?.split(',').map(|s| s.trim().parse()).collect::<std::result::Result<_, _>>()?;
    let model = Model::load(&dir)?;
    let rows: Vec<usize> = (0..ids.len()).collect();
    let logits = model.forward(&ids, &StepMeta::span(0, 0, ids.len()), &rows, &mut NoCache)?; // (seq, vocab)
    let json = serde_json::json!({ "logits": logits.outer_iter().map(|r| r.to_vec()).collect::<Vec<_>>() });
    match flag("--out") {
        Some(path) => std::fs::write(path, json.to_string())?,
        None => println!("{json}"),
    }
    Ok(())
}
