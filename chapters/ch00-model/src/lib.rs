//! Chapter 0: a Llama-architecture decoder on CPU (f32, ndarray) and the vocabulary of serving.
//!
//! The model never changes between chapters; what changes is where K and V live (the
//! [`AttentionBackend`]) and who gets scheduled (the [`Engine`]).

pub mod attention;
pub mod checkpoint;
pub mod config;
pub mod dtype;
pub mod error;
pub mod kernels;
pub mod load;
pub mod memory;
pub mod model;
pub mod ops;
pub mod packed;
pub mod pages;
pub mod random;
pub mod roofline;
pub mod rope;
pub mod sampling;
pub mod save;
pub mod serving;
pub mod step;
pub mod stepwise;
pub mod tokenizer;
pub mod workload;

pub use attention::{attend_one, AttentionBackend, AttnShape, StepMeta, StepQkv};
pub use checkpoint::{default_model_dir, load_model, LoadedModel};
pub use config::LlamaConfig;
pub use error::{ModelError, Result};
pub use memory::{kv_bytes_per_token, kv_bytes_per_token_per_layer, DType, MemoryPlan};
pub use model::Model;
pub use sampling::{Sampler, SamplingParams};
pub use serving::{
    resolve_max_len, sequences, split_samples, Clock, Engine, FinishReason, Phase, Request, RequestOutput, RunOptions, RunOutput, RunStats,
    Sequence, TraceEntry, TraceStep, MAX_SAMPLES,
};
pub use step::{run_spans, Span};
pub use stepwise::{drive, EngineLoad, NewToken, StepEngine, StepOutput};
pub use tokenizer::Tokenizer;
pub use workload::{Arrivals, LengthDist, WorkloadSpec};
