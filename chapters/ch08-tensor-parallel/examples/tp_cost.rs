//! Chapter 8's cost table: weights, K/V and all-reduce bytes per rank for two Llama shapes.
//!   cargo run --release -p ch08-tensor-parallel --example tp_cost > book/src/generated/tp-cost.md

use ch00_model::LlamaConfig;

fn main() -> ch00_model::Result<()> {
    let configs = [("Llama-2-7B shape", LlamaConfig::named("llama-7b")?), ("Llama-3-70B shape", LlamaConfig::named("llama3-70b")?)];
    print!("{}", ch08_tensor_parallel::cost::markdown(&configs, &[1, 2, 4, 8], &[1, 64]));
    Ok(())
}
