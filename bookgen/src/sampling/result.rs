//! What the parallel-sampling runs find: one design's figures, one run's designs, the report.

/// One way of serving the samples.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingDesign {
    pub design: String,
    /// Most blocks in use at once (`None` for contiguous slots).
    pub peak_blocks_used: Option<usize>,
    pub peak_running: usize,
    pub mean_running: f64,
    /// Mean running sequences while others waited (accounting runs in which some waited).
    pub mean_running_queued: Option<f64>,
    pub steps: usize,
    pub preemptions: usize,
    /// Blocks copied on write.
    pub cow_copies: usize,
    pub generated_tokens: usize,
    /// `None` in accounting runs.
    pub tokens_per_s: Option<f64>,
}

/// The samples of `prompts` prompts, `n` each, served several ways under one KV budget.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingRun {
    pub model: String,
    pub prompts: usize,
    pub n: usize,
    pub budget_bytes: u64,
    pub num_blocks: usize,
    pub block_size: usize,
    pub designs: Vec<SamplingDesign>,
    /// Real run: every design produced exactly the tokens of the independent requests.
    pub same_tokens: Option<bool>,
}

/// The parallel-sampling section of `kvserve bench`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SamplingReport {
    pub real: Option<SamplingRun>,
    pub accounting: Vec<SamplingRun>,
}
