//! KV-cache memory math: what one token costs, and what a batch of long requests costs.

use crate::config::LlamaConfig;

/// Element types the KV cache can be stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn bytes(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Some(DType::F32),
            "f16" | "fp16" | "float16" => Some(DType::F16),
            "bf16" | "bfloat16" => Some(DType::BF16),
            _ => None,
        }
    }
}

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
    pub fn new(
        config: &LlamaConfig,
        dtype: DType,
        batch: u64,
        seq_len: u64,
        weight_bytes: u64,
        activations: (u64, u64),
        gpu: u64,
    ) -> Self {
        let per_token = kv_bytes_per_token(config, dtype);
        MemoryPlan {
            per_token_per_layer: kv_bytes_per_token_per_layer(config, dtype),
            per_token,
            per_request: per_token * seq_len,
            kv_total: per_token * seq_len * batch,
            weights: weight_bytes,
            activations,
            gpu,
        }
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
        let long = MemoryPlan::new(&c, DType::F16, 16, 8192, weights, act, 80_000_000_000);
        assert_eq!(long.kv_total, 64 << 30);
        assert!(!long.fits());
        let short = MemoryPlan::new(&c, DType::F16, 16, 2048, weights, act, 80_000_000_000);
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
}
