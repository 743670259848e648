//! kvserve: the registry of every stage, used by the CLI, the cross-stage tests and the benches.

use ch00_serving::Engine;

pub mod eval;

pub use ch00_model;
pub use ch00_serving;

/// The prefill policy of chapter 5's block scheduler (and so of chapter 6): the three switches
/// `generate`, `bench` and `serve` take on the command line, with vLLM V1's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefill {
    /// Keep and share full blocks of equal prefixes (`--no-prefix-caching` turns it off).
    pub prefix_caching: bool,
    /// Prompts in chunks that fill what the decodes leave of the step's budget
    /// (`--no-chunked-prefill` turns it off).
    pub chunked: bool,
    /// The step's token budget (`--max-num-batched-tokens`); `None`: chapter 4's default.
    pub max_num_batched_tokens: Option<usize>,
}

impl Default for Prefill {
    fn default() -> Self {
        Prefill { prefix_caching: true, chunked: true, max_num_batched_tokens: None }
    }
}

impl Prefill {
    /// `engine` with this policy, its other settings kept.
    pub fn apply(&self, engine: ch05_paged_attention::PagedEngine) -> ch05_paged_attention::PagedEngine {
        ch05_paged_attention::PagedEngine {
            prefix_sharing: self.prefix_caching,
            chunked_prefill: self.chunked,
            max_tokens_per_step: self.max_num_batched_tokens,
            ..engine
        }
    }
}

// ANCHOR: stages
/// Every stage of the book, in order, as a boxed `Engine` with default settings.
pub fn stages() -> Vec<Box<dyn Engine>> {
    stages_with(&Prefill::default())
}

/// Every stage, chapter 5's with this prefill policy.
pub fn stages_with(prefill: &Prefill) -> Vec<Box<dyn Engine>> {
    vec![
        Box::new(ch01_naive::NaiveEngine),
        Box::new(ch02_kv_cache::KvCacheEngine::default()),
        Box::new(ch03_static_batching::StaticBatchEngine::default()),
        Box::new(ch04_continuous_batching::ContinuousBatchEngine::default()),
        Box::new(prefill.apply(ch05_paged_attention::PagedEngine::default())),
    ]
}
// ANCHOR_END: stages

/// The stage called `name` (e.g. "ch02-kv-cache"; "ch02" works too). Chapter 6 (`ch06-cuda`)
/// is found here but is not in [`stages`]: it needs an NVIDIA GPU, and on a machine without one
/// it answers every run with a clear error.
pub fn stage(name: &str) -> Option<Box<dyn Engine>> {
    stage_with(name, &Prefill::default())
}

/// The same, chapters 5 and 6 with this prefill policy.
pub fn stage_with(name: &str, prefill: &Prefill) -> Option<Box<dyn Engine>> {
    let paged = prefill.apply(ch06_cuda::CudaEngine::default().paged);
    let gpu: Box<dyn Engine> = Box::new(ch06_cuda::CudaEngine { paged, ..Default::default() });
    stages_with(prefill).into_iter().chain([gpu]).find(|e| e.name() == name || e.name().split('-').next() == Some(name))
}

pub use ch00_model::{default_model_dir, load_model, LoadedModel};

/// Whether this machine has a GPU that chapter 6 can open.
pub fn ch06_available() -> bool {
    ch06_cuda::Gpu::new(0).is_ok()
}
