//! How fast this machine's cores read memory (all cores together), and what that makes the
//! fastest possible decode step of a named model shape: every weight read once.
//!
//! cargo run --release -p ch00-model --example read_bandwidth -- [config, default peer-76m]

use ch00_model::roofline::{read_bandwidth, weight_bytes_per_step};
use ch00_model::LlamaConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "peer-76m".into());
    let config = LlamaConfig::named(&name)?;
    let bw = read_bandwidth(1 << 30, 10);
    let bytes = weight_bytes_per_step(&config);
    println!("read_bandwidth_gb_s: {:.2}", bw / 1e9);
    println!("weight_bytes_per_step: {bytes}");
    println!("floor_ms_per_step: {:.3}", bytes as f64 / bw * 1e3);
    println!("floor_tokens_per_s: {:.2}", bw / bytes as f64);
    Ok(())
}
