//! KV-cache memory math: what one token costs, and what a batch of long requests costs.

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
pub use crate::dtype::DType;

// ANCHOR: kv_bytes
/// Bytes of K and V one token holds in one layer: 2 (K and V) × kv_heads × head_dim × dtype.
pub fn kv_bytes_per_token_per_layer(config: &LlamaConfig, dtype: impl Into<Precision>) -> u64 {
    2 * config.num_key_value_heads as u64 * config.head_dim as u64 * dtype.into().bits() / 8
}

/// Bytes of K and V one token holds across all layers.
pub fn kv_bytes_per_token(config: &LlamaConfig, dtype: impl Into<Precision>) -> u64 {
    config.num_hidden_layers as u64 * kv_bytes_per_token_per_layer(config, dtype)
}
// ANCHOR_END: kv_bytes

// ANCHOR: precision
/// What one stored element costs, for sizing: the engines' [`DType`]s, and the quantized formats
/// serving engines store weights and KV in. The bits exclude the quantization scales (one per
/// tensor, channel or group of elements, depending on the scheme).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    F16,
    BF16,
    /// FP8 (E4M3 or E5M2), as Hopper's tensor cores read it.
    Fp8,
    Int8,
    Int4,
    /// 2-bit, as KIVI stores the KV cache (with a recent window kept in full precision).
    Int2,
}

impl Precision {
    pub fn bits(self) -> u64 {
        match self {
            Precision::F32 => 32,
            Precision::F16 | Precision::BF16 => 16,
            Precision::Fp8 | Precision::Int8 => 8,
            Precision::Int4 => 4,
            Precision::Int2 => 2,
        }
    }
}
// ANCHOR_END: precision

impl Precision {
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(d) = DType::parse(s) {
            return Some(d.into());
        }
        match s.to_ascii_lowercase().as_str() {
            "fp8" | "fp8_e4m3" | "fp8_e5m2" => Some(Precision::Fp8),
            "int8" | "i8" => Some(Precision::Int8),
            "int4" | "i4" => Some(Precision::Int4),
            "int2" | "i2" => Some(Precision::Int2),
            _ => None,
        }
    }

    /// The name `--kv-dtype` and the tables print: "fp16", "fp8", "int4".
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "fp32",
            Precision::F16 => "fp16",
            Precision::BF16 => "bf16",
            Precision::Fp8 => "fp8",
            Precision::Int8 => "int8",
            Precision::Int4 => "int4",
            Precision::Int2 => "int2",
        }
    }
}

impl From<DType> for Precision {
    fn from(d: DType) -> Self {
        match d {
            DType::F32 => Precision::F32,
            DType::F16 => Precision::F16,
            DType::BF16 => Precision::BF16,
        }
    }
}

// ANCHOR: card
/// A GPU as `nvidia-smi` reports its memory, in MiB: HBM is built and sized in binary units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Card {
    pub name: &'static str,
    pub mib: u64,
}

/// The "80 GB" H100 (SXM and PCIe alike).
pub const H100_80GB: Card = Card { name: "H100 80GB", mib: 81_559 };
/// The "141 GB" H200.
pub const H200_141GB: Card = Card { name: "H200 141GB", mib: 143_771 };
/// The share of the card an engine takes (vLLM's `gpu_memory_utilization` default, and chapter 6's).
pub const GPU_MEMORY_UTILIZATION: f64 = 0.9;
/// The CUDA context, cuBLAS handle and its workspace: about half a GiB (counted, not measured).
pub const CUDA_CONTEXT_BYTES: u64 = 512 << 20;

impl Card {
    pub fn bytes(&self) -> u64 {
        self.mib << 20
    }

    /// What is left for KV blocks: `utilization` of the card, minus the weights and the engine's
    /// buffers (activations, CUDA context). Zero if they do not fit.
    pub fn kv_budget(&self, utilization: f64, weights: u64, buffers: u64) -> u64 {
        ((self.bytes() as f64 * utilization) as u64).saturating_sub(weights.saturating_add(buffers))
    }
}
// ANCHOR_END: card

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
        dtype: impl Into<Precision>,
        batch: u64,
        seq_len: u64,
        weight_bytes: u64,
        activations: (u64, u64),
        gpu: u64,
    ) -> Result<Self> {
        let dtype = dtype.into();
        let per_token = kv_bytes_per_token(config, dtype);
        let too_large =
            || ModelError::Overflow(format!("{batch} requests × {seq_len} tokens × {per_token} B of KV"));
        let per_request = per_token.checked_mul(seq_len).ok_or_else(too_large)?;
        let kv_total = per_request.checked_mul(batch).ok_or_else(too_large)?;
        // total() adds these; check once here so it cannot overflow.
        kv_total
            .checked_add(weight_bytes)
            .and_then(|b| b.checked_add(activations.0.max(activations.1)))
            .ok_or_else(too_large)?;
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
        let card = H100_80GB.bytes(); // 81,559 MiB = 85.5 GB
        let long = MemoryPlan::new(&c, DType::F16, 16, 8192, weights, act, card).unwrap();
        assert_eq!(long.kv_total, 64 << 30);
        assert!(!long.fits()); // 68.7 + 13.5 + 4 GB > 85.5 GB
        let short = MemoryPlan::new(&c, DType::F16, 16, 2048, weights, act, card).unwrap();
        assert_eq!(short.kv_total, 16 << 30);
        assert!(short.fits());
        assert_eq!(short.max_requests(), 63); // (85.52 − 13.48 − 4) GB / 1 GiB
    }

    #[test]
    fn the_card_model_leaves_utilization_minus_weights_and_buffers() {
        assert_eq!(H100_80GB.bytes(), 85_520_809_984);
        let weights = LlamaConfig::named("llama-7b").unwrap().param_count() * 2;
        let budget = H100_80GB.kv_budget(GPU_MEMORY_UTILIZATION, weights, CUDA_CONTEXT_BYTES);
        assert_eq!(budget, 76_968_728_985 - weights - CUDA_CONTEXT_BYTES);
        assert_eq!(H100_80GB.kv_budget(0.1, weights, 0), 0, "weights beyond the share leave nothing");
    }

    #[test]
    fn quantized_kv_halves_and_quarters_the_token() {
        let c = LlamaConfig::named("llama-7b").unwrap();
        assert_eq!(kv_bytes_per_token(&c, Precision::Fp8), 256 * 1024);
        assert_eq!(kv_bytes_per_token(&c, Precision::Int8), 256 * 1024);
        assert_eq!(kv_bytes_per_token(&c, Precision::Int4), 128 * 1024);
        assert_eq!(kv_bytes_per_token(&c, Precision::Int2), 64 * 1024);
        assert_eq!(Precision::parse("fp8"), Some(Precision::Fp8));
        assert_eq!(Precision::parse("bf16"), Some(Precision::BF16));
        assert_eq!(Precision::parse("fp4"), None);
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
