//! kvserve: the registry of every stage, used by the CLI, the cross-stage tests and the benches.

use ch00_model::{Engine, LlamaConfig, Model, Result, Tokenizer};
use std::path::{Path, PathBuf};

pub use ch00_model;

// ANCHOR: stages
/// Every stage of the book, in order, as a boxed `Engine` with default settings.
pub fn stages() -> Vec<Box<dyn Engine>> {
    vec![Box::new(ch01_naive::NaiveEngine), Box::new(ch02_kv_cache::KvCacheEngine::default())]
}
// ANCHOR_END: stages

/// The stage called `name` (e.g. "ch02-kv-cache"; "ch02" works too).
pub fn stage(name: &str) -> Option<Box<dyn Engine>> {
    stages().into_iter().find(|e| e.name() == name || e.name().split('-').next() == Some(name))
}

/// The model shipped with the repository.
pub fn default_model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join("shakespeare")
}

/// A model and, when it came from a checkpoint directory, its tokenizer.
pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Option<Tokenizer>,
    /// Where it came from: a directory, or "random:<config name>".
    pub source: String,
}

/// Loads a checkpoint directory, or builds a random model from a named config, or (neither
/// given) loads the shipped model, falling back to the random `tiny` model if it is absent.
pub fn load_model(dir: Option<&Path>, config: Option<&str>) -> Result<LoadedModel> {
    if let Some(name) = config {
        let model = Model::random(LlamaConfig::named(name)?, 0)?;
        return Ok(LoadedModel { model, tokenizer: None, source: format!("random:{name}") });
    }
    let default = default_model_dir();
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None if default.join("config.json").exists() => default,
        None => return load_model(None, Some("tiny")),
    };
    let model = Model::load(&dir)?;
    let tok_path = dir.join("tokenizer.json");
    let tokenizer =
        if tok_path.exists() { Some(Tokenizer::from_file(&tok_path, model.config.bos_token_id)?) } else { None };
    Ok(LoadedModel { model, tokenizer, source: dir.display().to_string() })
}
