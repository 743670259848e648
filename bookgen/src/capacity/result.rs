//! What the capacity experiment finds: one design's figures, both designs under one budget, the
//! block-size and prefix-sharing rows, and the whole report (`kvserve bench --json`'s `capacity`).

use ch05_paged_attention::MemSeries;

/// One design's figures in one run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DesignResult {
    /// Most requests running in one step.
    pub peak_running: usize,
    /// Requests running per step, on average.
    pub mean_running: f64,
    /// Requests running per step while others still waited (memory was the limit).
    pub mean_running_queued: f64,
    /// KV bytes reserved for the running requests, averaged over steps (slots in use × max_len,
    /// or blocks in use × block size).
    pub kv_bytes_allocated: u64,
    /// KV bytes holding real tokens, averaged over steps.
    pub kv_bytes_used: u64,
    /// 100 × (1 − used / allocated): reserved memory that held no token.
    pub waste_pct: f64,
    pub preemptions: usize,
    /// Generated tokens per wall-clock second; `None` in the accounting run.
    pub tokens_per_s: Option<f64>,
    pub steps: usize,
    pub generated_tokens: usize,
    pub peak_kv_bytes_used: u64,
    /// Per step: (x, reserved bytes, used bytes), x in seconds (real run) or steps (accounting).
    #[serde(skip)]
    pub memory: Vec<(f64, u64, u64)>,
}

impl DesignResult {
    pub(crate) fn new(series: &MemSeries, tokens_per_s: Option<f64>, xs: Option<Vec<f64>>) -> Self {
        let xs = xs.unwrap_or_else(|| (0..series.steps.len()).map(|i| i as f64).collect());
        DesignResult {
            peak_running: series.peak_running(),
            mean_running: series.mean_running(),
            mean_running_queued: series.mean_running_queued(),
            kv_bytes_allocated: series.mean_reserved_bytes().round() as u64,
            kv_bytes_used: series.mean_used_bytes().round() as u64,
            waste_pct: series.waste_pct(),
            preemptions: series.preemptions,
            tokens_per_s,
            steps: series.steps.len(),
            generated_tokens: series.generated_tokens,
            peak_kv_bytes_used: series.peak_used_bytes(),
            memory: xs.into_iter().zip(&series.steps).map(|(x, s)| (x, s.reserved_bytes, s.used_bytes)).collect(),
        }
    }
}

/// Both designs under one budget.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CapacityRun {
    pub model: String,
    pub dtype: String,
    pub kv_bytes_per_token: u64,
    pub budget_bytes: u64,
    pub max_len: usize,
    pub block_size: usize,
    pub num_slots: usize,
    pub num_blocks: usize,
    pub n_requests: usize,
    pub contiguous: DesignResult,
    pub paged: DesignResult,
    /// paged.peak_running / contiguous.peak_running.
    pub concurrency_ratio: f64,
    /// paged.mean_running / contiguous.mean_running.
    pub mean_running_ratio: f64,
    /// paged.mean_running_queued / contiguous.mean_running_queued: requests the same memory
    /// holds while demand exceeds it.
    pub queued_running_ratio: f64,
}

impl CapacityRun {
    pub(crate) fn new(head: RunHead, contiguous: DesignResult, paged: DesignResult) -> Self {
        CapacityRun {
            concurrency_ratio: paged.peak_running as f64 / contiguous.peak_running.max(1) as f64,
            mean_running_ratio: paged.mean_running / contiguous.mean_running.max(1e-9),
            queued_running_ratio: paged.mean_running_queued / contiguous.mean_running_queued.max(1e-9),
            model: head.model,
            dtype: head.dtype,
            kv_bytes_per_token: head.per_token,
            budget_bytes: head.budget,
            max_len: head.max_len,
            block_size: head.block_size,
            num_slots: head.slots,
            num_blocks: head.blocks,
            n_requests: head.n_requests,
            contiguous,
            paged,
        }
    }
}

/// The figures of a run that do not depend on the design.
pub(crate) struct RunHead {
    pub(crate) model: String,
    pub(crate) dtype: String,
    pub(crate) per_token: u64,
    pub(crate) budget: u64,
    pub(crate) max_len: usize,
    pub(crate) block_size: usize,
    pub(crate) slots: usize,
    pub(crate) blocks: usize,
    pub(crate) n_requests: usize,
}

/// One row of the block-size table (accounting run).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BlockSizeRow {
    pub block_size: usize,
    pub num_blocks: usize,
    pub peak_running: usize,
    pub mean_running: f64,
    pub mean_running_queued: f64,
    pub waste_pct: f64,
    pub preemptions: usize,
    pub steps: usize,
}

/// Prefix sharing in the accounting run: every prompt starts with the same system prompt.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PrefixRow {
    pub system_prompt_tokens: usize,
    /// Share of admitted prompt tokens found in the prefix cache.
    pub hit_rate: f64,
    /// Mean running requests while others queued: contiguous slots, blocks, blocks with sharing.
    pub contiguous_running_queued: f64,
    pub paged_running_queued: f64,
    pub shared_running_queued: f64,
    pub shared_preemptions: usize,
}

/// The `capacity` section of `kvserve bench --json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CapacityReport {
    pub real: Option<CapacityRun>,
    pub accounting: CapacityRun,
    pub block_sizes: Vec<BlockSizeRow>,
    pub prefix_sharing: Option<PrefixRow>,
}
