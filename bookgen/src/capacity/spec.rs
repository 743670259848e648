//! What the capacity experiment runs: the real CPU run's spec, the accounting run's spec, the
//! options of the whole report, and the equal per-step limits both designs get.

use crate::shape::Shape;
use ch00_model::{kv_bytes_per_token, DType, LlamaConfig};
use ch00_serving::{Arrivals, LengthDist, WorkloadSpec};
use ch04_continuous_batching::{ContinuousBatchEngine, SchedulerConfig as SlotConfig, SlotBudget};
use ch05_paged_attention::{KvBudget, PagedEngine, SchedulerConfig};

/// The real CPU run: a random-weight model of a named shape, `slots` contiguous slots' worth of
/// KV memory, and a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct RealRunSpec {
    pub shape: Shape,
    pub max_len: usize,
    /// The budget, in slots of `max_len` tokens (chapter 4 gets exactly this many).
    pub slots: usize,
    pub block_size: usize,
    pub workload: WorkloadSpec,
}

impl Default for RealRunSpec {
    /// `bench` model, 4 slots of 256 tokens (16 MiB of f32 KV), 48 chat-like requests all at once
    /// (prompts 16..=64, outputs exponential with mean 32, at most 192: every request fits 256).
    fn default() -> Self {
        RealRunSpec {
            shape: Shape::builtin("bench"),
            max_len: 256,
            slots: 4,
            block_size: 16,
            workload: WorkloadSpec {
                n_requests: 48,
                prompt_len: LengthDist::Uniform { lo: 16, hi: 64 },
                output_len: LengthDist::Exponential { mean: 32.0, min: 4, max: 192 },
                arrivals: Arrivals::AllAtOnce,
                seed: 0,
            },
        }
    }
}

impl RealRunSpec {
    /// The same experiment without the model: an accounting run whose whole "GPU" is this run's
    /// KV budget. Its counts (everything but tokens/s) are the real run's, step for step.
    pub fn as_accounting(&self) -> AccountingSpec {
        AccountingSpec {
            shape: self.shape.clone(),
            dtype: DType::F32,
            gpu_bytes: self.kv_budget(&self.shape.config),
            weight_bytes: 0,
            reserve_bytes: 0,
            max_len: self.max_len,
            block_size: self.block_size,
            workload: self.workload.clone(),
        }
    }

    /// The KV budget in bytes: `slots` slots of `max_len` f32 tokens of `config`.
    pub fn kv_budget(&self, config: &LlamaConfig) -> u64 {
        self.slots as u64 * self.max_len as u64 * kv_bytes_per_token(config, DType::F32)
    }

    /// Chapter 4's engine on the budget, with no per-step token limit: memory is the only limit.
    pub fn contiguous_engine(&self, config: &LlamaConfig) -> ContinuousBatchEngine {
        ContinuousBatchEngine {
            slots: SlotBudget::KvBytes(self.kv_budget(config)),
            max_len: Some(self.max_len),
            max_tokens_per_step: Some(usize::MAX),
            ..Default::default()
        }
    }

    /// Chapter 5's engine on the same budget in blocks, with no cap on running sequences or
    /// tokens per step: memory is the only limit.
    pub fn paged_engine(&self, config: &LlamaConfig) -> PagedEngine {
        PagedEngine {
            budget: KvBudget::KvBytes(self.kv_budget(config)),
            block_size: self.block_size,
            max_len: Some(self.max_len),
            max_running: Some(usize::MAX),
            max_tokens_per_step: Some(usize::MAX),
            ..Default::default()
        }
    }
}

/// The accounting run: a model shape and a GPU, no weights and no compute.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountingSpec {
    pub shape: Shape,
    pub dtype: DType,
    /// The memory the engine may take: its share of the card.
    pub gpu_bytes: u64,
    pub weight_bytes: u64,
    /// Activations, CUDA context, allocator slack: memory that is neither weights nor KV.
    pub reserve_bytes: u64,
    pub max_len: usize,
    pub block_size: usize,
    pub workload: WorkloadSpec,
}

impl Default for AccountingSpec {
    /// Llama-2-7B shape in fp16 (512 KiB/token) on an "80 GB" H100, with the book's one KV budget
    /// ([`crate::card::seven_b`]: 90% of 81,559 MiB minus the weights and chapter 6's buffers).
    /// max_len 2048; 2000 requests at once with prompts uniform 64..=512 and outputs exponential
    /// with mean 256, cut at 2048 − 512.
    fn default() -> Self {
        let card = crate::card::seven_b();
        AccountingSpec {
            shape: Shape::builtin("llama-7b"),
            dtype: DType::F16,
            gpu_bytes: (card.card.bytes() as f64 * card.utilization) as u64,
            weight_bytes: card.weights,
            reserve_bytes: card.buffers,
            max_len: 2048,
            block_size: 16,
            workload: WorkloadSpec {
                n_requests: 2000,
                prompt_len: LengthDist::Uniform { lo: 64, hi: 512 },
                output_len: LengthDist::Exponential { mean: 256.0, min: 1, max: 2048 - 512 },
                arrivals: Arrivals::AllAtOnce,
                seed: 0,
            },
        }
    }
}

impl AccountingSpec {
    pub fn budget_bytes(&self) -> u64 {
        self.gpu_bytes.saturating_sub(self.weight_bytes + self.reserve_bytes)
    }
}

/// What to run. `real: None` skips the CPU run (tests, quick looks).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapacityOptions {
    pub real: Option<RealRunSpec>,
    pub accounting: AccountingSpec,
    /// Block sizes for the block-size table (accounting run); empty skips it.
    pub block_sizes: Vec<usize>,
    /// Length of the shared system prompt for the prefix-sharing row; `None` skips it.
    pub system_prompt_tokens: Option<usize>,
}

impl CapacityOptions {
    /// Both runs with their defaults, the block sizes 8, 16, 32, 128 and a 256-token system prompt.
    pub fn full() -> Self {
        CapacityOptions {
            real: Some(RealRunSpec::default()),
            accounting: AccountingSpec::default(),
            block_sizes: vec![8, 16, 32, 128],
            system_prompt_tokens: Some(256),
        }
    }
}

// ANCHOR: limits
/// Chapter 4's per-step limits as the capacity experiment sets them, equal for both designs: none.
/// Memory is what the experiment measures, so nothing else may decide how many requests run —
/// no cap on running requests beyond what the memory holds (for slots, one per slot, chapter 4's
/// default) and no token budget per step.
pub fn slot_config(num_slots: usize) -> SlotConfig {
    SlotConfig { num_slots, max_running: num_slots, max_tokens_per_step: usize::MAX }
}

/// The block pool's side of [`slot_config`]: no per-step limits (`SchedulerConfig::new`).
pub fn block_config(num_blocks: usize, block_size: usize) -> SchedulerConfig {
    SchedulerConfig::new(num_blocks, block_size)
}
// ANCHOR_END: limits
