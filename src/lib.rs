//! kvserve: the registry of every stage, used by the CLI, the cross-stage tests and the benches.

use ch00_serving::Engine;

pub mod eval;

pub use ch00_model;
pub use ch00_serving;

// ANCHOR: stages
/// Every stage of the book, in order, as a boxed `Engine` with default settings.
pub fn stages() -> Vec<Box<dyn Engine>> {
    vec![
        Box::new(ch01_naive::NaiveEngine),
        Box::new(ch02_kv_cache::KvCacheEngine::default()),
        Box::new(ch03_static_batching::StaticBatchEngine::default()),
        Box::new(ch04_continuous_batching::ContinuousBatchEngine::default()),
        Box::new(ch05_paged_attention::PagedEngine::default()),
    ]
}
// ANCHOR_END: stages

/// The stage called `name` (e.g. "ch02-kv-cache"; "ch02" works too). Chapter 6 (`ch06-cuda`)
/// is found here but is not in [`stages`]: it needs an NVIDIA GPU, and on a machine without one
/// it answers every run with a clear error.
pub fn stage(name: &str) -> Option<Box<dyn Engine>> {
    let gpu: Box<dyn Engine> = Box::new(ch06_cuda::CudaEngine::default());
    stages().into_iter().chain([gpu]).find(|e| e.name() == name || e.name().split('-').next() == Some(name))
}

pub use ch00_model::{default_model_dir, load_model, LoadedModel};

/// Whether this machine has a GPU that chapter 6 can open.
pub fn ch06_available() -> bool {
    ch06_cuda::Gpu::new(0).is_ok()
}
