//! How fast this machine's cores read memory (all cores together), and what that makes the
//! fastest possible decode step of a named model shape: every weight read once.
//!
//! cargo run --release -p ch00-model --example read_bandwidth -- [config, default peer-76m] [f32|f16|bf16]

use ch00_model::roofline::{read_bandwidth, weight_bytes_per_step};
use ch00_model::{DType, LlamaConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "peer-76m".into());
    let dtype_name = std::env::args().nth(2).unwrap_or_else(|| "f32".into());
    let dtype = DType::parse(&dtype_name).ok_or_else(|| format!("unknown weight type {dtype_name:?}: f32, f16 or bf16"))?;
    let config = LlamaConfig::named(&name)?;
    let bw = read_bandwidth(1 << 30, 10);
    let bytes = weight_bytes_per_step(&config, dtype);
    println!("read_bandwidth_gb_s: {:.2}", bw / 1e9);
    println!("weight_bytes_per_step: {bytes}");
    println!("floor_ms_per_step: {:.3}", bytes as f64 / bw * 1e3);
    println!("floor_tokens_per_s: {:.2}", bw / bytes as f64);
    Ok(())
}
