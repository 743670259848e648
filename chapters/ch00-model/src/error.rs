//! Every way loading or running the model can fail, as one error type.

use std::path::PathBuf;

// ANCHOR: errors
/// Errors from loading a checkpoint, building a model or running an engine.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "no model found (looked in {0}): pass --model DIR, set KVSERVE_MODEL=DIR, \
         or --config tiny for a random model"
    )]
    NoModel(String),
    #[error("missing file {0}")]
    MissingFile(PathBuf),
    #[error("could not read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("malformed {path}: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error("unsupported architecture {found:?}: kvserve runs Llama-family decoders (LlamaForCausalLM)")]
    UnsupportedArchitecture { found: String },
    #[error("unsupported config: {0}")]
    UnsupportedConfig(String),
    #[error("tensor {name} is missing from the checkpoint")]
    MissingTensor { name: String },
    #[error("tensor {name} has shape {found:?}, expected {expected:?}")]
    TensorShape { name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("tensor {name} has dtype {dtype}; supported: F32, F16, BF16")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("unknown config name {0:?}; known: {1}")]
    UnknownConfig(String, String),
    #[error(
        "refusing to allocate {gib:.1} GiB of random weights for {name}; its shape is for memory math only"
    )]
    TooLarge { name: String, gib: f64 },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("request {id}: the prompt is empty")]
    EmptyPrompt { id: u64 },
    #[error("request {id}: prompt of {len} tokens does not fit the context of {max} tokens")]
    PromptTooLong { id: u64, len: usize, max: usize },
    #[error("request {id}: token id {token} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { id: u64, token: u32, vocab: usize },
    #[error("invalid sampling parameters: {0}")]
    InvalidSampling(String),
    #[error("invalid engine settings: {0}")]
    InvalidSettings(String),
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    #[error("GPU: {0}")]
    Device(String),
    #[error("{0}: too many bytes to count in 64 bits")]
    Overflow(String),
}
// ANCHOR_END: errors

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
