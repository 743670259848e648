//! The book's one card model: what a GPU leaves for the KV cache. Every page that sizes a KV
//! budget on a card (chapter 5's accounting run, appendix A, the cheat sheet, `kvserve memory`)
//! takes it from here, and chapter 6's scenario runs the same arithmetic on the GPU:
//! [`GPU_MEMORY_UTILIZATION`] of the card as `nvidia-smi` reports it, minus the weights, minus the
//! buffers chapter 6's engine allocates (its activations at its defaults, and the CUDA context).

use ch00_model::{kv_bytes_per_token, Card, LlamaConfig, Precision, CUDA_CONTEXT_BYTES, GPU_MEMORY_UTILIZATION, H100_80GB};
use crate::units::thousands;
use std::fmt::Write;

/// Chapter 6's engine defaults the buffers are sized for: tokens and sequences per pass, block size.
const PASS_TOKENS: usize = 4096;
const PASS_SEQS: usize = 256;
const BLOCK: usize = 16;
const MIN_CONTEXT: usize = 8192;

/// A card's KV budget for one model, and what went into it.
#[derive(Debug, Clone, PartialEq)]
pub struct CardBudget {
    pub card: Card,
    pub model: String,
    pub utilization: f64,
    pub weight_precision: Precision,
    pub kv_precision: Precision,
    pub weights: u64,
    pub buffers: u64,
    pub kv_budget: u64,
    pub kv_per_token: u64,
}

/// The buffers chapter 6's engine allocates for `config` (fp16 activations, its default pass of
/// 4,096 tokens and 256 sequences, contexts up to `max_len` but at least 8K, as in chapter 6's
/// scenario), plus the CUDA context: counted from the engine's own sizes, as that scenario counts
/// them. (So one model has one budget on one card, whatever context a page sizes it for.)
pub fn engine_buffers(config: &LlamaConfig, max_len: usize) -> u64 {
    let cap = ch06_cuda::engine::capacity(BLOCK, max_len.max(MIN_CONTEXT), PASS_TOKENS, PASS_SEQS);
    ch06_cuda::model::buffer_bytes::<half::f16>(config, &cap) + CUDA_CONTEXT_BYTES
}

/// One rank's slice of `config` under `tp`-way tensor parallelism: 1/tp of the query heads, the
/// KV heads (at least one) and the MLP; the hidden size and the vocabulary stay whole.
pub fn tp_shard(config: &LlamaConfig, tp: usize) -> LlamaConfig {
    let tp = tp.max(1);
    LlamaConfig {
        num_attention_heads: (config.num_attention_heads / tp).max(1),
        num_key_value_heads: (config.num_key_value_heads / tp).max(1),
        intermediate_size: config.intermediate_size / tp,
        ..config.clone()
    }
}

/// `config` on `card`, weights and KV stored in the precisions given, contexts up to `max_len`.
pub fn card_budget(card: Card, name: &str, config: &LlamaConfig, weights: Precision, kv: Precision, max_len: usize) -> CardBudget {
    let weight_bytes = config.param_count() * weights.bits() / 8;
    let buffers = engine_buffers(config, max_len);
    CardBudget {
        card,
        model: name.to_string(),
        utilization: GPU_MEMORY_UTILIZATION,
        weight_precision: weights,
        kv_precision: kv,
        weights: weight_bytes,
        buffers,
        kv_budget: card.kv_budget(GPU_MEMORY_UTILIZATION, weight_bytes, buffers),
        kv_per_token: kv_bytes_per_token(config, kv),
    }
}

/// The book's 7B budget: Llama-2-7B's shape in fp16 with an 8K context (chapter 6's scenario) on an
/// "80 GB" H100.
pub fn seven_b() -> CardBudget {
    let c = LlamaConfig { max_position_embeddings: 8192, ..LlamaConfig::named("llama-7b").expect("a named shape") };
    card_budget(H100_80GB, "llama-7b", &c, Precision::F16, Precision::F16, 8192)
}

impl CardBudget {
    /// Tokens the budget holds, across all running requests.
    pub fn tokens(&self) -> u64 {
        self.kv_budget / self.kv_per_token.max(1)
    }

    /// Requests of `len` tokens each, every byte of their cache holding a token.
    pub fn requests(&self, len: u64) -> u64 {
        self.tokens() / len.max(1)
    }

    /// The budget as a Markdown table, and the requests that fit at each of `lens`.
    pub fn markdown(&self, lens: &[u64]) -> String {
        let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
        let gb = |b: u64| format!("{:.1} GB", b as f64 / 1e9);
        let mut o = String::new();
        let _ = writeln!(o, "| {} on an {} | |", self.model, self.card.name);
        let _ = writeln!(o, "|---|---:|");
        let _ = writeln!(o, "| card, as `nvidia-smi` reports it | {} MiB = {} ({}) |", thousands(self.card.mib), gib(self.card.bytes()), gb(self.card.bytes()));
        let used = (self.card.bytes() as f64 * self.utilization) as u64;
        let _ = writeln!(o, "| × {} (`gpu_memory_utilization`) | {} |", self.utilization, gib(used));
        let _ = writeln!(o, "| − weights ({}) | {} ({}) |", self.weight_precision.name(), gib(self.weights), gb(self.weights));
        let _ = writeln!(o, "| − buffers (chapter 6's activations + CUDA context) | {} |", gib(self.buffers));
        let _ = writeln!(o, "| **= KV budget** | **{}** ({}) |", gib(self.kv_budget), gb(self.kv_budget));
        let _ = writeln!(o, "| KV per token ({}) | {} KiB |", self.kv_precision.name(), self.kv_per_token / 1024);
        let _ = writeln!(o, "| tokens resident, across all requests | {} |", thousands(self.tokens()));
        for &len in lens {
            let _ = writeln!(o, "| requests of {} tokens (no waste) | {} |", thousands(len), thousands(self.requests(len)));
        }
        o
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_7b_budget_is_the_card_share_minus_weights_and_buffers() {
        let b = seven_b();
        assert_eq!(b.weights, 13_476_831_232);
        assert_eq!(b.kv_budget, (85_520_809_984f64 * 0.9) as u64 - b.weights - b.buffers);
        // chapter 6's scenario (generated/gpu/ch06-scenario.md): 58.0 GiB, 7,418 blocks of 16 tokens
        assert_eq!(format!("{:.1}", b.kv_budget as f64 / (1u64 << 30) as f64), "58.0");
        assert_eq!(b.kv_budget / (16 * 512 * 1024), 7418);
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
