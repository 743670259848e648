//! What tensor parallelism costs and saves, in bytes: the weights and the K/V a rank holds, and
//! what the two all-reduces per layer send during one decode step, beside the weight bytes the
//! step reads on each rank.

use ch00_model::LlamaConfig;

/// One row of the cost model: `config` over `world` ranks, a decode step of `batch` tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct TpCost {
    pub world: usize,
    pub batch: usize,
    /// Weight bytes per rank (every matrix split `world` ways; norms replicated, negligible).
    pub weight_bytes: f64,
    /// K/V bytes per token per rank (K/V heads split, or replicated past their count).
    pub kv_bytes_per_token: f64,
    /// Bytes each rank sends in one decode step: 2 all-reduces per layer of `batch × hidden`
    /// values each, a ring all-reduce sending 2 (W − 1) / W of the message per rank.
    pub allreduce_bytes: f64,
}

// ANCHOR: cost
impl TpCost {
    /// With `elem`-byte weights, activations and K/V.
    pub fn of(c: &LlamaConfig, world: usize, batch: usize, elem: usize) -> Self {
        let e = elem as f64;
        let w = world as f64;
        let kv_heads = (c.num_key_value_heads as f64 / w).max(1.0); // replicated past their count
        let message = batch as f64 * c.hidden_size as f64 * e;
        TpCost {
            world,
            batch,
            weight_bytes: c.param_count() as f64 * e / w,
            kv_bytes_per_token: 2.0 * c.num_hidden_layers as f64 * kv_heads * c.head_dim as f64 * e,
            allreduce_bytes: 2.0 * c.num_hidden_layers as f64 * message * 2.0 * (w - 1.0) / w,
        }
    }
}
// ANCHOR_END: cost

/// A Markdown table of `configs` × `worlds` × `batches` (f16).
pub fn markdown(configs: &[(&str, LlamaConfig)], worlds: &[usize], batches: &[usize]) -> String {
    let gib = |b: f64| b / (1u64 << 30) as f64;
    let mut s = String::from(
        "| model | ranks | weights per rank | K/V per token per rank | decode batch | all-reduces per step | all-reduce bytes sent per rank per step | ÷ weight bytes read per rank |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, c) in configs {
        for &w in worlds {
            for &b in batches {
                let t = TpCost::of(c, w, b, 2);
                s += &format!(
                    "| {name} | {w} | {:.1} GiB | {:.0} KiB | {b} | {} | {:.1} MiB | {:.2}% |\n",
                    gib(t.weight_bytes),
                    t.kv_bytes_per_token / 1024.0,
                    if w > 1 { 2 * c.num_hidden_layers } else { 0 },
                    t.allreduce_bytes / (1u64 << 20) as f64,
                    100.0 * t.allreduce_bytes / t.weight_bytes
                );
            }
        }
    }
    s += "\n*f16 weights, activations and K/V; `cargo run --release -p ch08-tensor-parallel --example tp_cost` (arithmetic from the configs, no measurement). A decode step reads every weight once per rank; the all-reduces send `batch × hidden` values twice per layer, a ring sending 2 (W − 1) / W of each message from every rank.*\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rank_sends_nothing_and_more_ranks_hold_less() {
        let c = LlamaConfig::named("llama3-70b").unwrap();
        let (one, two, eight) = (TpCost::of(&c, 1, 32, 2), TpCost::of(&c, 2, 32, 2), TpCost::of(&c, 8, 32, 2));
        assert_eq!(one.allreduce_bytes, 0.0);
        assert!((two.weight_bytes * 2.0 - one.weight_bytes).abs() < 1.0);
        assert_eq!(eight.kv_bytes_per_token * 8.0, one.kv_bytes_per_token); // 8 K/V heads, 1 each
        let sixteen = TpCost::of(&c, 16, 32, 2);
        assert_eq!(sixteen.kv_bytes_per_token, eight.kv_bytes_per_token); // replicated past 8
    }
}
