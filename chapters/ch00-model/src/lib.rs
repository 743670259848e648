//! Chapter 0: a Llama-architecture decoder on CPU (f32 arithmetic over weights kept in f32, f16
//! or bf16; ndarray). The model never changes between chapters; what changes is where K and V
//! live (the [`AttentionBackend`]) and, in the serving core (`ch00-serving`), who gets scheduled.
//!
//! - The model: [`config`] (a checkpoint's shape), [`model`] (the decoder's forward pass over a
//!   flat batch of tokens), [`attention`] (the backend seam and the reference attention),
//!   [`rope`], [`ops`] (linear, RMSNorm, SiLU), [`sampling`].
//! - Checkpoints: [`load`] and [`checkpoint`] (Hugging Face directories, safetensors),
//!   [`save`], [`random`] (deterministic random weights), [`tokenizer`].
//! - Sizes: [`dtype`], [`memory`] (KV bytes per token, memory plans), [`roofline`] (a step's
//!   bytes and FLOPs).
//! - [`cpu`]: the CPU kernels appendix C teaches; [`error`]: the one error type.

pub mod attention;
pub mod checkpoint;
pub mod config;
pub mod cpu;
pub mod dtype;
pub mod error;
pub mod load;
pub mod memory;
pub mod model;
pub mod ops;
pub mod random;
pub mod roofline;
pub mod rope;
pub mod sampling;
pub mod save;
pub mod tokenizer;

pub use attention::{attend_one, AttentionBackend, AttnShape, StepMeta, StepQkv};
pub use checkpoint::{default_model_dir, load_model, load_model_as, LoadedModel};
pub use config::LlamaConfig;
pub use error::{ModelError, Result};
pub use memory::{
    kv_bytes_per_token, kv_bytes_per_token_per_layer, Card, DType, MemoryPlan, Precision, CUDA_CONTEXT_BYTES, GPU_MEMORY_UTILIZATION,
    H100_80GB, H200_141GB,
};
pub use model::Model;
pub use sampling::{Sampler, SamplingParams};
pub use tokenizer::Tokenizer;
