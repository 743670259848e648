//! The data the exercises work on, given to you complete. Each type is a small, self-contained copy
//! of the shape a chapter's real type has (named in its doc comment), so the exercises do not
//! change when the chapters do.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;

/// What an exercise returns on bad input: a clear error, never a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExerciseError {
    /// Two inputs that must have matching lengths do not.
    LengthMismatch { what: &'static str, expected: usize, got: usize },
    /// An index or position outside what the data structure holds.
    OutOfRange { what: &'static str, index: usize, len: usize },
    /// A setting that makes the question meaningless (a block size of 0, zero slots, …).
    InvalidSettings(String),
    /// The KV budget cannot hold even one slot or block.
    BudgetTooSmall { budget: u64, needed: u64 },
    /// A block freed or shared while no one owns it.
    BlockNotInUse(usize),
    /// The block pool is empty.
    OutOfBlocks,
}

impl fmt::Display for ExerciseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExerciseError::LengthMismatch { what, expected, got } => {
                write!(f, "{what}: expected length {expected}, got {got}")
            }
            ExerciseError::OutOfRange { what, index, len } => write!(f, "{what} {index} out of range (0..{len})"),
            ExerciseError::InvalidSettings(m) => write!(f, "invalid settings: {m}"),
            ExerciseError::BudgetTooSmall { budget, needed } => {
                write!(f, "a budget of {budget} bytes is smaller than the {needed} bytes one unit needs")
            }
            ExerciseError::BlockNotInUse(b) => write!(f, "block {b} is not in use"),
            ExerciseError::OutOfBlocks => write!(f, "the block pool is empty"),
        }
    }
}

impl std::error::Error for ExerciseError {}

pub type Result<T> = std::result::Result<T, ExerciseError>;

/// A model's shape, as much of `ch00_model::LlamaConfig` as memory math needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub layers: u64,
    pub hidden: u64,
    /// Query heads.
    pub heads: u64,
    /// Key/value heads (fewer than `heads` with grouped-query attention).
    pub kv_heads: u64,
    pub head_dim: u64,
}

impl Shape {
    /// Llama-2-7B: 32 layers, 32 heads, 32 KV heads, head_dim 128.
    pub const LLAMA_7B: Shape = Shape { layers: 32, hidden: 4096, heads: 32, kv_heads: 32, head_dim: 128 };
    /// Llama-3-8B: 32 layers, 32 heads, 8 KV heads, head_dim 128.
    pub const LLAMA3_8B: Shape = Shape { layers: 32, hidden: 4096, heads: 32, kv_heads: 8, head_dim: 128 };
    /// Llama-3-70B: 80 layers, 64 heads, 8 KV heads, head_dim 128.
    pub const LLAMA3_70B: Shape = Shape { layers: 80, hidden: 8192, heads: 64, kv_heads: 8, head_dim: 128 };
}

/// The head layout of attention, as `ch00_model::AttnShape`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// One sequence's contiguous KV cache for every layer, as `ch02_kv_cache::KvCache`:
/// `k` and `v` are (layers, max_len, kv_dim), row-major, allocated up front.
#[derive(Debug, Clone, PartialEq)]
pub struct ContiguousCache {
    pub k: Vec<f32>, // (layers, max_len, kv_dim)
    pub v: Vec<f32>, // (layers, max_len, kv_dim)
    pub layers: usize,
    pub max_len: usize,
    pub kv_dim: usize,
    /// Tokens written so far: positions 0..len are valid.
    pub len: usize,
}

impl ContiguousCache {
    pub fn new(layers: usize, max_len: usize, kv_dim: usize) -> Self {
        let size = layers * max_len * kv_dim;
        ContiguousCache { k: vec![0.0; size], v: vec![0.0; size], layers, max_len, kv_dim, len: 0 }
    }
}

/// What static batching did with its slots (chapter 3's `Recorder` figures).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotSteps {
    /// Model steps (forward passes).
    pub steps: usize,
    /// Slot-steps that fed a token.
    pub busy: usize,
    /// Slot-steps held by a request that had already finished.
    pub wasted: usize,
}

/// A request as chapter 4's scheduler sees it (`ch04_continuous_batching::Pending`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pending {
    pub key: usize,
    pub arrival_s: f64,
    /// Tokens its prefill feeds (the prompt length).
    pub prefill_tokens: usize,
}

/// A request admitted this step: prefill `tokens` tokens into `slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admit {
    pub key: usize,
    pub slot: usize,
    pub tokens: usize,
}

/// A running request that feeds one token this step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decode {
    pub key: usize,
    pub slot: usize,
}

/// What one step runs (`ch04_continuous_batching::StepPlan`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepPlan {
    pub decode: Vec<Decode>,
    pub admit: Vec<Admit>,
}

/// Chapter 4's scheduler state (`ch04_continuous_batching::Scheduler`): a waiting queue in arrival
/// order, the running requests in admission order, and the free slots.
#[derive(Debug, Clone)]
pub struct SlotScheduler {
    pub num_slots: usize,
    pub max_running: usize,
    pub max_tokens_per_step: usize,
    pub waiting: VecDeque<Pending>,
    pub running: Vec<Decode>,
    /// Free slots; the lowest is handed out first.
    pub free: BTreeSet<usize>,
}

impl SlotScheduler {
    /// Errors when a limit is 0 or the step budget cannot hold one decode token per running request.
    pub fn new(num_slots: usize, max_running: usize, max_tokens_per_step: usize) -> Result<Self> {
        if num_slots == 0 || max_running == 0 || max_tokens_per_step < max_running.min(num_slots) {
            return Err(ExerciseError::InvalidSettings(format!(
                "{num_slots} slots, max_running {max_running}, max_tokens_per_step {max_tokens_per_step}"
            )));
        }
        Ok(SlotScheduler {
            num_slots,
            max_running,
            max_tokens_per_step,
            waiting: VecDeque::new(),
            running: Vec::new(),
            free: (0..num_slots).collect(),
        })
    }

    /// Queues a request in arrival order (ties: submission order).
    pub fn submit(&mut self, p: Pending) -> Result<()> {
        if p.prefill_tokens == 0 || p.prefill_tokens > self.max_tokens_per_step || !p.arrival_s.is_finite() {
            return Err(ExerciseError::InvalidSettings(format!("request {} cannot be scheduled", p.key)));
        }
        let at = self.waiting.partition_point(|w| w.arrival_s <= p.arrival_s);
        self.waiting.insert(at, p);
        Ok(())
    }

    /// Removes a finished request and frees its slot; returns the slot.
    pub fn finish(&mut self, key: usize) -> Result<usize> {
        let i = self.running.iter().position(|r| r.key == key).ok_or(ExerciseError::OutOfRange {
            what: "running request",
            index: key,
            len: self.running.len(),
        })?;
        let slot = self.running.remove(i).slot;
        self.free.insert(slot);
        Ok(slot)
    }
}

/// Index of one physical KV block.
pub type BlockId = usize;

/// A pool of KV blocks with reference counts (`ch05_paged_attention::BlockAllocator`). Free blocks
/// sit on a stack (`free`, the next one handed out is the last); `ref_count[b] == 0` exactly when
/// `b` is on the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPool {
    pub free: Vec<BlockId>,
    pub ref_count: Vec<u32>,
}

impl BlockPool {
    /// `num_blocks` free blocks; block 0 is on top of the stack, so it is handed out first.
    pub fn new(num_blocks: usize) -> Self {
        BlockPool { free: (0..num_blocks).rev().collect(), ref_count: vec![0; num_blocks] }
    }

    pub fn num_free(&self) -> usize {
        self.free.len()
    }
}

/// A sequence as chapter 5's block scheduler sees it: its length and its block table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqBlocks {
    pub id: usize,
    /// Tokens whose K/V must be held (prompt plus generated so far).
    pub tokens: usize,
    pub table: Vec<BlockId>,
}

/// Chapter 5's scheduler state (`ch05_paged_attention::BlockScheduler`, without prefix sharing):
/// a stack of free blocks, the running sequences in admission order (the last is the youngest) and
/// the waiting queue (the front is served first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockQueue {
    pub block_size: usize,
    /// Free blocks kept back when admitting while others run.
    pub watermark: usize,
    pub free: Vec<BlockId>,
    pub running: Vec<SeqBlocks>,
    pub waiting: VecDeque<SeqBlocks>,
}

impl BlockQueue {
    /// `num_blocks` free blocks (block 0 handed out first), nothing running or waiting.
    pub fn new(num_blocks: usize, block_size: usize, watermark: usize) -> Self {
        BlockQueue { block_size, watermark, free: (0..num_blocks).rev().collect(), ..Default::default() }
    }
}

/// Who one scheduling step admitted and who it preempted, by sequence id, in the order it happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockStep {
    pub admitted: Vec<usize>,
    pub preempted: Vec<usize>,
}

/// Where a sequence's next token's K/V goes (copy-on-write, chapter 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteTarget {
    /// The block holding the position is this sequence's alone: write in place.
    InPlace(BlockId),
    /// The position opens a new block, freshly allocated and appended to the table.
    NewBlock(BlockId),
    /// The block was shared: copy its first `rows` token rows from `from` to the fresh block `to`
    /// (now in the table in `from`'s place), then write into `to`.
    Copy { from: BlockId, to: BlockId, rows: usize },
}
