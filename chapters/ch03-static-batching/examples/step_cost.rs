//! What one decode step costs as the batch grows: B equal requests, decoded together.
//!
//! cargo run --release -p ch03-static-batching --example step_cost -- [config] [max batch]
//! (default: `bench 16`). On a memory-bound model the cost of a step barely grows with B, so the
//! tokens per second grow almost B-fold: the whole case for batching. `kvserve bench` writes the
//! same measurement as the book's table.

use ch00_model::{LlamaConfig, Model};
use ch03_static_batching::decode_step_ms;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = args.first().map_or("bench", String::as_str);
    let max_batch: usize = args.get(1).map_or(Ok(16), |a| a.parse())?;
    let model = Model::random(LlamaConfig::named(config)?, 0)?;
    println!("model {config}: {:.0} MB of f32 weights", model.config.param_count() as f64 * 4.0 / 1e6);
    println!("{:>5} {:>14} {:>14} {:>10}", "batch", "ms/step (p50)", "ms/token", "tok/s");
    let mut b = 1;
    while b <= max_batch {
        let ms = decode_step_ms(&model, b)?;
        println!("{b:>5} {ms:>14.1} {:>14.2} {:>10.1}", ms / b as f64, 1e3 * b as f64 / ms);
        b *= 2;
    }
    Ok(())
}
