//! KV-cache memory math: what one token costs, and what a batch of long requests costs.

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
pub use crate::dtype::DType;

// ANCHOR: kv_bytes
/// Bytes of K and V one token holds in one layer: 2 (K and V) × kv_heads × head_dim × dtype.
pub fn kv_bytes_per_token_per_layer(config: &LlamaConfig, dtype: DType) -> u64 {
    2 * config.num_key_value_heads as u64 * config.head_dim as u64 * dtype.bytes()
}

/// Bytes of K and V one token holds across all layers.
pub fn kv_bytes_per_token(config: &LlamaConfig, dtype: DType) -> u64 {
    config.num_hidden_layers as u64 * kv_bytes_per_token_per_layer(config, dtype)
}
// ANCHOR_END: kv_bytes

// ANCHOR: plan
/// What a batch of equally long requests costs on one GPU: KV cache + weights + activations.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    pub per_token_per_layer: u64,
    pub per_token: u64,
    pub per_request: u64,
    pub kv_total: u64,
    pub weights: u64,
    /// Activation/workspace reserve, low and high estimate.
    pub activations: (u64, u64),
    pub gpu: u64,
}

impl MemoryPlan {
    /// `batch` requests of `seq_len` tokens each, KV in `dtype`, weights of `weight_bytes` bytes.
    /// An error if the total does not fit in a u64 of bytes (16 EiB): no GPU is that large.
    pub fn new(
        config: &LlamaConfig,
        dtype: DType,
        batch: u64,
        seq_len: u64,
        weight_bytes: u64,
        activations: (u64, u64),
        gpu: u64,
    ) -> Result<Self> {
        let per_token = kv_bytes_per_token(config, dtype);
        let too_large = || ModelError::Overflow(format!("{batch} requests × {seq_len} tokens × {per_token} B of KV"));
        let per_request = per_token.checked_mul(seq_len).ok_or_else(too_large)?;
        let kv_total = per_request.checked_mul(batch).ok_or_else(too_large)?;
        // total() adds these; check once here so it cannot overflow.
        kv_total.checked_add(weight_bytes).and_then(|b| b.checked_add(activations.0.max(activations.1))).ok_or_else(too_large)?;
        Ok(MemoryPlan {
            per_token_per_layer: kv_bytes_per_token_per_layer(config, dtype),
            per_token,
            per_request,
            kv_total,
            weights: weight_bytes,
            activations,
            gpu,
        })
    }

    /// Total need with the low and the high activation estimate.
    pub fn total(&self) -> (u64, u64) {
        let base = self.kv_total + self.weights;
        (base + self.activations.0, base + self.activations.1)
    }

    /// Fits even with the high activation estimate.
    pub fn fits(&self) -> bool {
        self.total().1 <= self.gpu
    }

    /// How many requests of this length fit beside the weights and the high activation estimate.
    pub fn max_requests(&self) -> u64 {
        self.gpu.saturating_sub(self.weights + self.activations.1) / self.per_request.max(1)
    }
}
// ANCHOR_END: plan

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_7b_fp16_is_512_kib_per_token() {
        let c = LlamaConfig::named("llama-7b").unwrap();
        assert_eq!(kv_bytes_per_token_per_layer(&c, DType::F16), 16 * 1024);
        assert_eq!(kv_bytes_per_token(&c, DType::F16), 512 * 1024);
        assert_eq!(2048 * kv_bytes_per_token(&c, DType::F16), 1 << 30);
    }

    #[test]
    fn sixteen_8k_requests_of_a_7b_model_do_not_fit_in_80_gb() {
        let c = LlamaConfig::named("llama-7b").unwrap();
        let weights = c.param_count() * 2; // 13.48 GB
        let act = (2_000_000_000, 4_000_000_000);
        let long = MemoryPlan::new(&c, DType::F16, 16, 8192, weights, act, 80_000_000_000).unwrap();
        assert_eq!(long.kv_total, 64 << 30);
        assert!(!long.fits());
        let short = MemoryPlan::new(&c, DType::F16, 16, 2048, weights, act, 80_000_000_000).unwrap();
        assert_eq!(short.kv_total, 16 << 30);
        assert!(short.fits());
        assert_eq!(short.max_requests(), 58); // (80 − 13.48 − 4) GB / 1 GiB
    }

    #[test]
    fn grouped_query_attention_divides_by_the_group() {
        let l2 = LlamaConfig::named("llama-7b").unwrap();
        let l3 = LlamaConfig::named("llama3-8b").unwrap();
        assert_eq!(kv_bytes_per_token(&l2, DType::F16), 4 * kv_bytes_per_token(&l3, DType::F16));
    }

    #[test]
    fn sizes_beyond_u64_are_an_error_not_a_wrap() {
        let c = LlamaConfig::named("llama-7b").unwrap();
        let e = MemoryPlan::new(&c, DType::F16, 100_000_000_000, 100_000_000_000, 0, (0, 0), 1).unwrap_err();
        assert!(matches!(e, ModelError::Overflow(_)), "{e}");
        assert!(MemoryPlan::new(&c, DType::F16, 1, u64::MAX / (512 * 1024), u64::MAX, (0, 0), 1).is_err(), "weights added");
    }
}
