//! The interview's inputs (users, card, latency targets) and their validation.

use anyhow::Result;
use ch00_model::{Card, GPU_MEMORY_UTILIZATION, H100_80GB, H200_141GB};

/// The interview's inputs. The card's figures are datasheet values (inputs, not measurements).
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    pub users: usize,
    /// The card's memory in MiB, as `nvidia-smi` reports it: HBM is sized in binary units, so an
    /// "80 GB" H100 has 81,559 MiB (85.5 GB), not 80 × 10^9 bytes.
    /// The KV budget of each card is the book's card model ([`crate::card`]):
    /// [`GPU_MEMORY_UTILIZATION`] of it, minus its share of the weights and the buffers chapter
    /// 6's engine allocates for that share.
    pub gpu_mib: f64,
    pub bandwidth_tbs: f64,
    pub tflops: f64,
    pub tpot_ms: f64,
    /// The follow-up question's tighter target.
    pub tight_tpot_ms: f64,
    /// Time to first token the design must stay within (the prefill of one prompt, queueing left out).
    pub ttft_ms: f64,
    /// Dense FP8 tensor-core peak (datasheet), for the FP8 designs.
    pub fp8_tflops: f64,
    pub max_len: usize,
}

impl Default for Inputs {
    /// 256 concurrent users of Llama-3-70B on "80 GB" H100 SXM cards (81,559 MiB as nvidia-smi
    /// reports it, 3.35 TB/s HBM3, 989 dense bf16 TFLOP/s), 50 ms per output token (20 ms in the
    /// follow-up), the first token within 1 s, contexts capped at 4,096 tokens; 1,979 dense FP8
    /// TFLOP/s for the FP8 designs.
    fn default() -> Self {
        Inputs {
            users: 256,
            gpu_mib: H100_80GB.mib as f64,
            bandwidth_tbs: 3.35,
            tflops: 989.0,
            tpot_ms: 50.0,
            tight_tpot_ms: 20.0,
            ttft_ms: 1000.0,
            fp8_tflops: 1979.0,
            max_len: 4096,
        }
    }
}

impl Inputs {
    /// Errors when an input makes the questions meaningless.
    pub fn validate(&self) -> Result<()> {
        let positive = [self.gpu_mib, self.bandwidth_tbs, self.tflops, self.tpot_ms, self.tight_tpot_ms, self.ttft_ms, self.fp8_tflops];
        if self.users == 0 || self.max_len == 0 || positive.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
            anyhow::bail!("users, max_len, gpu_mib, bandwidth_tbs, tflops, fp8_tflops, tpot_ms, tight_tpot_ms and ttft_ms must be positive");
        }
        // Sizes stay far from u64's limit (a group of 8 such cards included).
        if self.gpu_mib > 1e9 || self.max_len > 1 << 30 {
            anyhow::bail!("gpu_mib must be at most 10^9 MiB, max_len at most 2^30 tokens");
        }
        Ok(())
    }

    /// The card's memory in bytes (`gpu_mib` × 2^20).
    pub fn gpu_bytes(&self) -> u64 {
        (self.gpu_mib * MIB) as u64
    }

    /// The card as ch00's card model names it: one of its named cards when `gpu_mib` is theirs.
    pub fn card(&self) -> Card {
        let mib = self.gpu_mib.round() as u64;
        [H100_80GB, H200_141GB].into_iter().find(|c| c.mib == mib).unwrap_or(Card { name: "GPU", mib })
    }

    /// What one card of a `tp`-way group keeps for the KV cache by the card model: its share of
    /// the card, minus `weights` (its share of them) and `buffers`; 0 when they do not fit.
    pub fn kv_budget(&self, weights: u64, buffers: u64) -> u64 {
        self.card().kv_budget(GPU_MEMORY_UTILIZATION, weights, buffers)
    }
}

/// Bytes in a MiB.
pub const MIB: f64 = (1u64 << 20) as f64;
