//! A run against its roofline. A step can take no less than the larger of the bytes it must move
//! over the measured copy bandwidth and the FLOPs it must do over the measured matmul peak; the
//! sum over a run's steps is its roofline, the time no engine can beat on this card for this
//! workload. The runner also sums each pass's device time (CUDA events), so the gap between a
//! run's wall time and its roofline splits into GPU time above the roofline and host time
//! (scheduling, metadata, reading ids back) between the passes.

use ch00_model::LlamaConfig;

/// What the card can do, measured in the same run (`bench::copy_bandwidth`, `bench::matmul_peak`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Ceilings {
    pub bytes_per_s: f64,
    pub flops_per_s: f64,
}

/// What one step does, counted from its tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepShape {
    /// Tokens fed (every one through every linear layer).
    pub tokens: usize,
    /// Tokens that pick a next token (through the lm_head).
    pub logit_rows: usize,
    /// Σ over tokens of the positions each attends to (its context).
    pub attended: u64,
    /// Cached positions the step's sequences read (Σ over sequences of the positions cached
    /// before the step; each read once at best).
    pub kv_positions: u64,
}

impl Ceilings {
    // ANCHOR: step_s
    /// The least time of a step of `shape` for a model of `c` with `elem`-byte weights and KV:
    /// the weights and the KV read once, the new KV written; 2 FLOPs per weight per token, 4 per
    /// attended position per query dimension (Q·K and P·V).
    pub fn step_s(&self, c: &LlamaConfig, elem: usize, shape: &StepShape) -> f64 {
        let (h, q, kv, inter, layers) =
            (c.hidden_size as f64, c.q_dim() as f64, c.kv_dim() as f64, c.intermediate_size as f64, c.num_hidden_layers as f64);
        let per_token = layers * (h * (q + 2.0 * kv) + q * h + 3.0 * h * inter); // linear weights a token meets
        let head = h * c.vocab_size as f64;
        let kv_bytes_per_position = 2.0 * layers * kv * elem as f64;
        let bytes = (per_token + head) * elem as f64 + (shape.kv_positions + shape.tokens as u64) as f64 * kv_bytes_per_position;
        let flops = 2.0 * per_token * shape.tokens as f64 + 2.0 * head * shape.logit_rows as f64 + 4.0 * layers * q * shape.attended as f64;
        (bytes / self.bytes_per_s).max(flops / self.flops_per_s)
    }
    // ANCHOR_END: step_s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decode_step_is_bound_by_bytes_and_a_long_prefill_by_flops() {
        let c = LlamaConfig::named("llama-7b").unwrap();
        let card = Ceilings { bytes_per_s: 4.0e12, flops_per_s: 700e12 };
        // B = 1 at context 512: ≈ 13.5 GB of f16 weights ÷ 4 TB/s ≈ 3.4 ms.
        let decode = StepShape { tokens: 1, logit_rows: 1, attended: 512, kv_positions: 511 };
        let t = card.step_s(&c, 2, &decode);
        assert!((3.2e-3..3.6e-3).contains(&t), "{t}");
        // A 4096-token prompt: ≈ 2 × 6.7e9 × 4096 FLOPs ÷ 700 TFLOP/s ≈ 78 ms, plus attention.
        let prefill = StepShape { tokens: 4096, logit_rows: 1, attended: 4096 * 4097 / 2, kv_positions: 0 };
        let t = card.step_s(&c, 2, &prefill);
        let matmul = 2.0 * 6.5e9 * 4096.0 / 700e12;
        assert!(t > matmul && t < 1.3 * matmul, "{t} vs {matmul}");
    }
}
