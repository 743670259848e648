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
    fn grouped_query_attention_divides_by_the_group() {
        let l2 = LlamaConfig::named("llama-7b").unwrap();
        let l3 = LlamaConfig::named("llama3-8b").unwrap();
        assert_eq!(kv_bytes_per_token(&l2, DType::F16), 4 * kv_bytes_per_token(&l3, DType::F16));
    }
}
